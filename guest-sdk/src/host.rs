//! Host functions, with native stand-ins for `cargo test`.
//!
//! On `wasm32` these call the `umbra:policy/host` imports. Elsewhere they read
//! and write a thread-local test host that [`crate::testing`] fills, because
//! the generated imports cannot run outside a component.

use crate::Level;

/// Writes `message` to the host's log at `level`.
pub fn log(level: Level, message: &str) {
    imp::log(level, message);
}

/// Returns the host's wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    imp::now_ms()
}

/// Returns the setting `name` for the asset being decided, if set.
pub fn setting(name: &str) -> Option<String> {
    imp::setting(name)
}

/// Returns the numeric setting `name`, or `default` when it is unset or not a
/// finite number. An unparsable value is logged as a warning, so an operator's
/// typo in `thresholds.rhai` shows up in the host's log.
pub fn setting_f64(name: &str, default: f64) -> f64 {
    let Some(raw) = setting(name) else {
        return default;
    };
    match raw.trim().parse::<f64>() {
        Ok(value) if value.is_finite() => value,
        _ => {
            log(
                Level::Warn,
                &format!(
                    "invalid setting `{name}` = `{raw}`: expected a finite number, using {default}"
                ),
            );
            default
        }
    }
}

/// Returns the integer setting `name`, or `default` when it is unset or not an
/// unsigned integer (logged as a warning).
pub fn setting_u64(name: &str, default: u64) -> u64 {
    let Some(raw) = setting(name) else {
        return default;
    };
    match raw.trim().parse::<u64>() {
        Ok(value) => value,
        Err(_) => {
            log(
                Level::Warn,
                &format!(
                    "invalid setting `{name}` = `{raw}`: expected an unsigned integer, using {default}"
                ),
            );
            default
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use crate::Level;
    use crate::bindings::umbra::policy::host;

    pub fn log(level: Level, message: &str) {
        host::log(level, message);
    }

    pub fn now_ms() -> u64 {
        host::now_ms()
    }

    pub fn setting(name: &str) -> Option<String> {
        host::setting(name)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use crate::Level;
    use crate::testing::TEST_HOST;

    pub fn log(level: Level, message: &str) {
        TEST_HOST.with(|host| host.borrow_mut().logs.push((level, message.to_owned())));
    }

    pub fn now_ms() -> u64 {
        TEST_HOST.with(|host| host.borrow().now_ms)
    }

    pub fn setting(name: &str) -> Option<String> {
        TEST_HOST.with(|host| host.borrow().settings.get(name).cloned())
    }
}
