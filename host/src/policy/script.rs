//! Rhai policies: the same three decisions as script functions over maps,
//! and `thresholds.rhai` scripts that only compute settings.
//!
//! A script defines any of `assess(asset, comparisons)`,
//! `next_plan(asset, profiles)`, `decide(service, assets)` and
//! `thresholds(asset)`. Arguments and results use the serde form of the
//! contract's types (`#{ score: 0.4, level: "Moderate", reasons: [] }`).
//! Scripts read settings with `setting(name)`, which returns a string or `()`
//! when unset, or with `setting_f64(name, otherwise)`, which returns a finite
//! number or `otherwise`. They write to the host log with `log(message)` or
//! `print`. A call runs under an operation budget, a call-depth limit, size
//! limits and the call's deadline. `eval` and `import` are disabled.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use rhai::{AST, Dynamic, Engine, EvalAltResult, Scope};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::sandbox::{LogLimiter, SandboxLimits};
use super::types::{
    Action, AssetStatus, Comparison, DriftAssessment, LoadPlan, ProfileInfo, ServiceStatus,
};
use super::{Decision, LoadError, PolicyError, Settings};

thread_local! {
    /// Settings and deadline of the call running on this thread. Rhai's
    /// registered functions and progress callback are shared by every call,
    /// and a call runs start to end on one thread.
    static CALL: RefCell<Option<CallState>> = const { RefCell::new(None) };
}

struct CallState {
    settings: Arc<Settings>,
    deadline: Instant,
}

/// Operations between two deadline checks; reading the clock on every
/// operation would dominate a short script's run time.
const DEADLINE_CHECK_INTERVAL: u64 = 256;

/// A policy or thresholds script run by Rhai.
pub struct ScriptPolicy {
    name: String,
    digest: String,
    limits: SandboxLimits,
    engine: Engine,
    ast: AST,
}

impl std::fmt::Debug for ScriptPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptPolicy")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl ScriptPolicy {
    /// Compiles `source`. `name` identifies the script in logs and errors.
    pub fn load(name: &str, source: &str, limits: SandboxLimits) -> Result<Self, LoadError> {
        let logs = Arc::new(LogLimiter::new(name, limits.log_lines_per_second));
        let engine = sandboxed_engine(&limits, &logs);
        let ast = engine.compile(source).map_err(|source| LoadError::Script {
            name: name.to_owned(),
            source,
        })?;
        Ok(Self {
            name: name.to_owned(),
            digest: super::digest(source.as_bytes()),
            limits,
            engine,
            ast,
        })
    }

    /// Returns the script's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns `sha256:` and the hex digest of the script's source.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Returns whether the script defines the function for `decision`.
    pub fn implements(&self, decision: Decision) -> bool {
        self.defines(function_name(decision), 2)
    }

    /// Returns whether the script defines `thresholds(asset)`.
    pub fn has_thresholds(&self) -> bool {
        self.defines("thresholds", 1)
    }

    fn defines(&self, name: &str, arity: usize) -> bool {
        self.ast
            .iter_functions()
            .any(|function| function.name == name && function.params.len() == arity)
    }

    /// Runs the drift decision.
    pub fn assess(
        &self,
        settings: &Arc<Settings>,
        asset: &AssetStatus,
        comparisons: &[Comparison],
    ) -> Result<DriftAssessment, PolicyError> {
        let comparisons: rhai::Array = comparisons.iter().map(comparison_to_dynamic).collect();
        let result = self.call(
            Decision::Drift,
            settings,
            (to_dynamic(asset), Dynamic::from_array(comparisons)),
        )?;
        self.parse(Decision::Drift, &result)
    }

    /// Runs the sequencer decision; `()` from the script means no plan.
    pub fn next_plan(
        &self,
        settings: &Arc<Settings>,
        asset: &AssetStatus,
        profiles: &[ProfileInfo],
    ) -> Result<Option<LoadPlan>, PolicyError> {
        let result = self.call(
            Decision::Sequencer,
            settings,
            (to_dynamic(asset), to_dynamic(profiles)),
        )?;
        if result.is_unit() {
            return Ok(None);
        }
        self.parse(Decision::Sequencer, &result).map(Some)
    }

    /// Runs the remediation decision.
    pub fn decide(
        &self,
        settings: &Arc<Settings>,
        service: &ServiceStatus,
        assets: &[AssetStatus],
    ) -> Result<Vec<Action>, PolicyError> {
        let result = self.call(
            Decision::Remediation,
            settings,
            (to_dynamic(service), to_dynamic(assets)),
        )?;
        self.parse(Decision::Remediation, &result)
    }

    /// Runs `thresholds(asset)` and returns its map as settings. Numbers,
    /// booleans and strings are accepted as values.
    pub fn thresholds(
        &self,
        settings: &Arc<Settings>,
        asset: &AssetStatus,
    ) -> Result<Settings, PolicyError> {
        let result = self.run(
            "thresholds",
            Decision::Drift,
            settings,
            (to_dynamic(asset),),
        )?;
        let invalid = |problem: String| PolicyError::InvalidOutput {
            policy: self.name.clone(),
            decision: Decision::Drift,
            problem,
        };
        let map = result.try_cast::<rhai::Map>().ok_or_else(|| {
            invalid("`thresholds` must return a map of setting names to values".to_owned())
        })?;
        let mut out = BTreeMap::new();
        for (key, value) in map {
            let text = if let Ok(number) = value.as_float() {
                if !number.is_finite() {
                    return Err(invalid(format!(
                        "threshold `{key}` is {number}: expected a finite number"
                    )));
                }
                number.to_string()
            } else if let Ok(number) = value.as_int() {
                number.to_string()
            } else if let Ok(flag) = value.as_bool() {
                flag.to_string()
            } else if value.is_string() {
                value.to_string()
            } else {
                return Err(invalid(format!(
                    "threshold `{key}` has type `{}`: expected a number, boolean or string",
                    value.type_name()
                )));
            };
            out.insert(key.to_string(), text);
        }
        Ok(out)
    }

    fn call(
        &self,
        decision: Decision,
        settings: &Arc<Settings>,
        args: impl rhai::FuncArgs,
    ) -> Result<Dynamic, PolicyError> {
        if !self.implements(decision) {
            return Err(PolicyError::NotImplemented {
                policy: self.name.clone(),
                decision,
            });
        }
        self.run(function_name(decision), decision, settings, args)
    }

    fn run(
        &self,
        function: &str,
        decision: Decision,
        settings: &Arc<Settings>,
        args: impl rhai::FuncArgs,
    ) -> Result<Dynamic, PolicyError> {
        let state = CallState {
            settings: Arc::clone(settings),
            deadline: Instant::now() + self.limits.deadline(),
        };
        CALL.with(|call| *call.borrow_mut() = Some(state));
        let result = self
            .engine
            .call_fn::<Dynamic>(&mut Scope::new(), &self.ast, function, args);
        CALL.with(|call| *call.borrow_mut() = None);

        result.map_err(|source| match *source {
            EvalAltResult::ErrorTerminated(..) => PolicyError::Timeout {
                policy: self.name.clone(),
                decision,
                deadline: self.limits.deadline(),
            },
            _ => PolicyError::Script {
                policy: self.name.clone(),
                decision,
                source,
            },
        })
    }

    fn parse<T: DeserializeOwned>(
        &self,
        decision: Decision,
        value: &Dynamic,
    ) -> Result<T, PolicyError> {
        rhai::serde::from_dynamic(value).map_err(|error| PolicyError::InvalidOutput {
            policy: self.name.clone(),
            decision,
            problem: format!("cannot read the script's result: {error}"),
        })
    }
}

fn function_name(decision: Decision) -> &'static str {
    match decision {
        Decision::Drift => "assess",
        Decision::Sequencer => "next_plan",
        Decision::Remediation => "decide",
    }
}

/// Converts a contract value to a Rhai value. The types only hold strings,
/// numbers, booleans, options, lists and records, which always convert.
fn to_dynamic<T: Serialize + ?Sized>(value: &T) -> Dynamic {
    rhai::serde::to_dynamic(value).unwrap_or(Dynamic::UNIT)
}

/// Converts a comparison to a Rhai map with the same shape as its serde form.
/// Built by hand because comparisons are the bulk of a drift call's input and
/// the serde path costs several times more.
fn comparison_to_dynamic(comparison: &Comparison) -> Dynamic {
    let summary = |summary: &super::types::Summary| {
        let mut map = rhai::Map::new();
        map.insert(
            "count".into(),
            Dynamic::from_int(rhai::INT::from(summary.count)),
        );
        map.insert("median".into(), Dynamic::from_float(summary.median));
        map.insert("mean".into(), Dynamic::from_float(summary.mean));
        map.insert("p90".into(), Dynamic::from_float(summary.p90));
        map.insert("min".into(), Dynamic::from_float(summary.min));
        map.insert("max".into(), Dynamic::from_float(summary.max));
        Dynamic::from_map(map)
    };

    let direction = match comparison.direction {
        super::types::Direction::HigherIsWorse => "HigherIsWorse",
        super::types::Direction::LowerIsWorse => "LowerIsWorse",
        super::types::Direction::Either => "Either",
    };

    let mut map = rhai::Map::new();
    map.insert("metric".into(), Dynamic::from(comparison.metric.clone()));
    map.insert("live".into(), summary(&comparison.live));
    map.insert("shadow".into(), summary(&comparison.shadow));
    map.insert(
        "relative_change".into(),
        Dynamic::from_float(comparison.relative_change),
    );
    map.insert("hl_shift".into(), Dynamic::from_float(comparison.hl_shift));
    map.insert("p_value".into(), Dynamic::from_float(comparison.p_value));
    map.insert(
        "noise_floor".into(),
        Dynamic::from_float(comparison.noise_floor),
    );
    map.insert("direction".into(), Dynamic::from(direction));
    Dynamic::from_map(map)
}

fn sandboxed_engine(limits: &SandboxLimits, logs: &Arc<LogLimiter>) -> Engine {
    let mut engine = Engine::new();
    engine.set_optimization_level(rhai::OptimizationLevel::Full);
    engine.set_max_operations(limits.rhai_max_operations);
    engine.set_max_call_levels(32);
    engine.set_max_expr_depths(64, 32);
    engine.set_max_string_size(64 << 10);
    engine.set_max_array_size(10_000);
    engine.set_max_map_size(10_000);
    engine.set_max_variables(1_000);
    engine.disable_symbol("eval");
    // No `import`: Rhai's default resolver reads `*.rhai` files from disk.
    engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());

    engine.on_progress(|operations| {
        if operations % DEADLINE_CHECK_INTERVAL != 0 {
            return None;
        }
        let expired = CALL.with(|call| {
            call.borrow()
                .as_ref()
                .is_some_and(|state| Instant::now() > state.deadline)
        });
        expired.then(|| Dynamic::from("deadline exceeded"))
    });

    let print_logs = Arc::clone(logs);
    engine.on_print(move |text| print_logs.emit(tracing::Level::INFO, text));
    let debug_logs = Arc::clone(logs);
    engine.on_debug(move |text, _, _| debug_logs.emit(tracing::Level::DEBUG, text));
    let log_logs = Arc::clone(logs);
    engine.register_fn("log", move |message: &str| {
        log_logs.emit(tracing::Level::INFO, message)
    });

    engine.register_fn("setting", |name: &str| -> Dynamic {
        CALL.with(|call| {
            call.borrow()
                .as_ref()
                .and_then(|state| state.settings.get(name).cloned())
                .map_or(Dynamic::UNIT, Dynamic::from)
        })
    });
    engine.register_fn("setting_f64", |name: &str, otherwise: f64| -> f64 {
        CALL.with(|call| {
            call.borrow()
                .as_ref()
                .and_then(|state| state.settings.get(name)?.trim().parse::<f64>().ok())
                .filter(|value| value.is_finite())
                .unwrap_or(otherwise)
        })
    });
    engine.register_fn("now_ms", || -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
            })
    });
    engine
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::types::{Direction, Summary};

    #[test]
    fn comparison_map_matches_serde_form() {
        let summary = Summary {
            count: 3,
            median: 1.0,
            mean: 1.5,
            p90: 2.0,
            min: 0.5,
            max: 2.5,
        };
        let comparison = Comparison {
            metric: "latency".to_owned(),
            live: summary,
            shadow: summary,
            relative_change: 0.25,
            hl_shift: 0.1,
            p_value: 0.04,
            noise_floor: 0.02,
            direction: Direction::LowerIsWorse,
        };

        let by_hand = comparison_to_dynamic(&comparison);
        let by_serde = to_dynamic(&comparison);

        assert_eq!(by_hand.to_string(), by_serde.to_string());
    }
}
