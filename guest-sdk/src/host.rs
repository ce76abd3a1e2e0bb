//! Host functions, with native stand-ins for `cargo test`.
//!
//! On `wasm32` these call the `umbra:policy/host` imports. Elsewhere they read
//! and write a thread-local test host that [`crate::testing`] fills, because
//! the generated imports cannot run outside a component.

use crate::{Level, MetricId};

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

/// Returns the name of metric `id`, the `metric` field of a
/// [`Comparison`](crate::Comparison).
///
/// The first call for an id calls the host. Later calls read a cache that
/// lives as long as the policy instance, so each name crosses into the policy
/// once.
pub fn metric_name(id: MetricId) -> &'static str {
    imp::metric_name(id)
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
    use crate::bindings::umbra::policy::host;
    use crate::{Level, MetricId};

    pub fn log(level: Level, message: &str) {
        host::log(level, message);
    }

    pub fn now_ms() -> u64 {
        host::now_ms()
    }

    pub fn setting(name: &str) -> Option<String> {
        host::setting(name)
    }

    std::thread_local! {
        /// Names by id. A component instance is single-threaded and the host
        /// replaces an instance soon after it has numbered 65,536 names, so
        /// leaking each name once bounds the cache and lets it hand out
        /// `&'static str`.
        static NAMES: std::cell::RefCell<Vec<Option<&'static str>>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Number of ids the cache keeps. The host replaces an instance once it has numbered
    /// 65,536 names (checked before each call), so ids this large are not cached.
    const MAX_CACHED_IDS: usize = 1 << 17;

    pub fn metric_name(id: MetricId) -> &'static str {
        NAMES.with(|names| {
            let index = id as usize;
            if let Some(Some(name)) = names.borrow().get(index) {
                return *name;
            }
            let name = host::metric_name(id);
            // An empty name means the host has not numbered this id yet, so it is not cached.
            if name.is_empty() || index >= MAX_CACHED_IDS {
                return "";
            }
            let name: &'static str = Box::leak(name.into_boxed_str());
            let mut names = names.borrow_mut();
            if names.len() <= index {
                names.resize(index + 1, None);
            }
            names[index] = Some(name);
            name
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use crate::testing::TEST_HOST;
    use crate::{Level, MetricId};

    pub fn log(level: Level, message: &str) {
        TEST_HOST.with(|host| host.borrow_mut().logs.push((level, message.to_owned())));
    }

    pub fn now_ms() -> u64 {
        TEST_HOST.with(|host| host.borrow().now_ms)
    }

    pub fn setting(name: &str) -> Option<String> {
        TEST_HOST.with(|host| host.borrow().settings.get(name).cloned())
    }

    pub fn metric_name(id: MetricId) -> &'static str {
        crate::testing::metric_name(id)
    }
}
