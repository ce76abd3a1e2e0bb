//! Native test harness: runs a policy against fixture files without wasmtime.
//!
//! A fixture is a JSON file with the decision to make, the settings the host
//! would pass, the input, and the expected decision:
//!
//! ```json
//! {
//!   "decision": "drift",
//!   "settings": { "drift.tolerance": "0.1" },
//!   "input": { "asset": { "...": "an AssetStatus" }, "comparisons": [] },
//!   "expect": { "level": "None", "score_max": 0.0 }
//! }
//! ```
//!
//! Comparisons name their metric (`"metric": "latency_p99_seconds"`) as the
//! host's JSON cases do; the harness numbers the names the way the host does
//! (see [`metric_id`]). Other inputs use the serde form of the generated
//! types: record fields in
//! snake_case, enum cases in UpperCamelCase (`"HigherIsWorse"`), variants as
//! `{ "Rollback": { ... } }`. The host's `umbra policy eval` reads the same
//! files. Expectations by decision:
//!
//! - `drift`: `level`, and optionally `score_min`, `score_max` and
//!   `reason_contains` (a substring of one of the reasons).
//! - `sequencer`: `profile`, the expected profile name or `null` for none.
//! - `remediation`: `actions`, the expected action kinds in order
//!   (`"notify"`, `"remediate"`, `"rollback"`, `"hold"`), and optionally
//!   `rollback_to`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Level;

/// State of the native stand-in for the host imports, one per thread.
#[derive(Debug, Default)]
pub struct TestHost {
    /// Settings returned by [`crate::setting`].
    pub settings: BTreeMap<String, String>,
    /// Messages written with [`crate::log`], oldest first.
    pub logs: Vec<(Level, String)>,
    /// Value returned by [`crate::now_ms`].
    pub now_ms: u64,
}

thread_local! {
    pub(crate) static TEST_HOST: RefCell<TestHost> = RefCell::new(TestHost::default());
}

thread_local! {
    /// Metric names numbered by [`metric_id`], by id. Never cleared, so an id
    /// keeps its name for the thread's life, as for a component instance.
    static METRIC_NAMES: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
}

/// Returns the id of metric `name` on this thread, numbering new names from 0
/// as the host does for an instance. Use it to build a
/// [`Comparison`](crate::Comparison) in a native test.
pub fn metric_id(name: &str) -> crate::MetricId {
    METRIC_NAMES.with(|names| {
        let mut names = names.borrow_mut();
        if let Some(index) = names.iter().position(|known| *known == name) {
            return index as crate::MetricId;
        }
        names.push(Box::leak(name.to_owned().into_boxed_str()));
        (names.len() - 1) as crate::MetricId
    })
}

/// Returns the name numbered `id` by [`metric_id`], or an empty string, as
/// the host returns for a number it never sent.
pub(crate) fn metric_name(id: crate::MetricId) -> &'static str {
    METRIC_NAMES.with(|names| names.borrow().get(id as usize).copied().unwrap_or(""))
}

/// A comparison as fixtures and the host's JSON cases write it: with the
/// metric's name instead of its id.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedComparison {
    /// Metric name.
    pub metric: String,
    /// The live asset's samples.
    pub live: crate::Summary,
    /// The shadow's samples.
    pub shadow: crate::Summary,
    /// See [`Comparison::relative_change`](crate::Comparison::relative_change).
    pub relative_change: f64,
    /// See [`Comparison::hl_shift`](crate::Comparison::hl_shift).
    pub hl_shift: f64,
    /// See [`Comparison::p_value`](crate::Comparison::p_value).
    pub p_value: f64,
    /// See [`Comparison::noise_floor`](crate::Comparison::noise_floor).
    pub noise_floor: f64,
    /// Direction in which the metric gets worse.
    pub direction: crate::Direction,
}

impl NamedComparison {
    /// Returns the comparison a policy receives, numbering the name with
    /// [`metric_id`].
    pub fn numbered(&self) -> crate::Comparison {
        crate::Comparison {
            metric: metric_id(&self.metric),
            live: self.live,
            shadow: self.shadow,
            relative_change: self.relative_change,
            hl_shift: self.hl_shift,
            p_value: self.p_value,
            noise_floor: self.noise_floor,
            direction: self.direction,
        }
    }
}

/// Replaces this thread's settings with `settings`.
pub fn set_settings<K: Into<String>, V: Into<String>>(settings: impl IntoIterator<Item = (K, V)>) {
    TEST_HOST.with(|host| {
        host.borrow_mut().settings = settings
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
    });
}

/// Removes and returns the messages logged on this thread so far.
pub fn take_logs() -> Vec<(Level, String)> {
    TEST_HOST.with(|host| std::mem::take(&mut host.borrow_mut().logs))
}

/// One fixture file. Unknown fields are rejected, as `umbra policy eval` does.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// Optional name, for people reading the file.
    #[serde(default)]
    pub name: Option<String>,
    /// Decision to make: `drift`, `sequencer` or `remediation`.
    pub decision: String,
    /// Settings the host passes for this case.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Arguments of the decision, by WIT parameter name.
    pub input: serde_json::Value,
    /// Expected decision; see the module documentation. Without one the
    /// fixture only checks that the policy runs.
    #[serde(default)]
    pub expect: serde_json::Value,
}

type DriftFn = fn(crate::AssetStatus, Vec<crate::Comparison>) -> crate::DriftAssessment;
type SequencerFn = fn(crate::AssetStatus, Vec<crate::ProfileInfo>) -> Option<crate::LoadPlan>;
type RemediationFn = fn(crate::ServiceStatus, Vec<crate::AssetStatus>) -> Vec<crate::Action>;

/// Runs fixtures against the decisions a policy implements.
///
/// ```no_run
/// # struct MyPolicy;
/// # impl umbra_guest::Drift for MyPolicy {
/// #     fn assess(_: umbra_guest::AssetStatus, _: Vec<umbra_guest::Comparison>) -> umbra_guest::DriftAssessment { unimplemented!() }
/// # }
/// let failures = umbra_guest::testing::Harness::new()
///     .drift::<MyPolicy>()
///     .run_dir("fixtures");
/// assert!(failures.is_empty(), "{failures:#?}");
/// ```
#[derive(Debug, Default)]
pub struct Harness {
    drift: Option<DriftFn>,
    sequencer: Option<SequencerFn>,
    remediation: Option<RemediationFn>,
}

impl Harness {
    /// Creates a harness with no decisions; add them with the builder methods.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `P` for `drift` fixtures.
    #[cfg(feature = "drift")]
    pub fn drift<P: crate::Drift>(mut self) -> Self {
        self.drift = Some(P::assess);
        self
    }

    /// Uses `P` for `sequencer` fixtures.
    #[cfg(feature = "sequencer")]
    pub fn sequencer<P: crate::Sequencer>(mut self) -> Self {
        self.sequencer = Some(P::next_plan);
        self
    }

    /// Uses `P` for `remediation` fixtures.
    #[cfg(feature = "remediation")]
    pub fn remediation<P: crate::Remediation>(mut self) -> Self {
        self.remediation = Some(P::decide);
        self
    }

    /// Runs every `*.json` fixture in `dir`, in name order, and returns one
    /// message per failed fixture. An unreadable directory is a failure too.
    pub fn run_dir(&self, dir: impl AsRef<Path>) -> Vec<String> {
        let dir = dir.as_ref();
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
                .collect(),
            Err(error) => {
                return vec![format!(
                    "cannot read fixture directory `{}`: {error}",
                    dir.display()
                )];
            }
        };
        paths.sort();
        if paths.is_empty() {
            return vec![format!("no `*.json` fixtures in `{}`", dir.display())];
        }
        paths
            .iter()
            .filter_map(|path| self.run_file(path).err())
            .collect()
    }

    /// Runs one fixture file.
    pub fn run_file(&self, path: &Path) -> Result<(), String> {
        let name = path.display();
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{name}: cannot read: {e}"))?;
        let fixture: Fixture =
            serde_json::from_str(&text).map_err(|e| format!("{name}: invalid fixture: {e}"))?;
        set_settings(fixture.settings.clone());
        self.run(&fixture)
            .map_err(|message| format!("{name}: {message}"))
    }

    /// Runs one parsed fixture with its settings already installed.
    pub fn run(&self, fixture: &Fixture) -> Result<(), String> {
        let expect = &fixture.expect;
        let unchecked = expect.is_null();
        match fixture.decision.as_str() {
            "drift" => {
                let assess = self.drift.ok_or("the harness has no drift policy")?;
                let (asset, comparisons): (_, Vec<NamedComparison>) =
                    arguments2(&fixture.input, "asset", "comparisons")?;
                let actual = assess(
                    asset,
                    comparisons.iter().map(NamedComparison::numbered).collect(),
                );
                if unchecked {
                    Ok(())
                } else {
                    check_drift(&actual, expect)
                }
            }
            "sequencer" => {
                let next_plan = self
                    .sequencer
                    .ok_or("the harness has no sequencer policy")?;
                let (asset, profiles) = arguments2(&fixture.input, "asset", "profiles")?;
                let actual = next_plan(asset, profiles);
                if unchecked {
                    Ok(())
                } else {
                    check_sequencer(&actual, expect)
                }
            }
            "remediation" => {
                let decide = self
                    .remediation
                    .ok_or("the harness has no remediation policy")?;
                let (service, assets) = arguments2(&fixture.input, "service", "assets")?;
                let actual = decide(service, assets);
                if unchecked {
                    Ok(())
                } else {
                    check_remediation(&actual, expect)
                }
            }
            other => Err(format!(
                "unknown decision `{other}`: expected `drift`, `sequencer` or `remediation`"
            )),
        }
    }
}

fn arguments2<A, B>(input: &serde_json::Value, first: &str, second: &str) -> Result<(A, B), String>
where
    A: serde::de::DeserializeOwned,
    B: serde::de::DeserializeOwned,
{
    let field = |name: &str| {
        input
            .get(name)
            .cloned()
            .ok_or_else(|| format!("input is missing `{name}`"))
    };
    let a = serde_json::from_value(field(first)?)
        .map_err(|e| format!("invalid input `{first}`: {e}"))?;
    let b = serde_json::from_value(field(second)?)
        .map_err(|e| format!("invalid input `{second}`: {e}"))?;
    Ok((a, b))
}

fn check_drift(actual: &crate::DriftAssessment, expect: &serde_json::Value) -> Result<(), String> {
    let mut problems = String::new();
    if let Some(level) = expect.get("level") {
        let actual_level = serde_json::to_value(actual.level).map_err(|e| e.to_string())?;
        if &actual_level != level {
            let _ = write!(problems, "level is {actual_level}, expected {level}; ");
        }
    }
    if let Some(min) = expect.get("score_min").and_then(serde_json::Value::as_f64)
        && (actual.score.is_nan() || actual.score < min)
    {
        let _ = write!(problems, "score {} is below {min}; ", actual.score);
    }
    if let Some(max) = expect.get("score_max").and_then(serde_json::Value::as_f64)
        && (actual.score.is_nan() || actual.score > max)
    {
        let _ = write!(problems, "score {} is above {max}; ", actual.score);
    }
    if let Some(needle) = expect
        .get("reason_contains")
        .and_then(serde_json::Value::as_str)
        && !actual.reasons.iter().any(|reason| reason.contains(needle))
    {
        let _ = write!(
            problems,
            "no reason contains `{needle}` (reasons: {:?}); ",
            actual.reasons
        );
    }
    finish(problems)
}

fn check_sequencer(
    actual: &Option<crate::LoadPlan>,
    expect: &serde_json::Value,
) -> Result<(), String> {
    let expected = expect
        .get("profile")
        .ok_or("expectation is missing `profile`")?;
    let actual_profile = actual.as_ref().map(|plan| plan.profile.as_str());
    if expected.as_str() == actual_profile {
        Ok(())
    } else {
        Err(format!(
            "profile is {actual_profile:?}, expected {expected}"
        ))
    }
}

fn check_remediation(actual: &[crate::Action], expect: &serde_json::Value) -> Result<(), String> {
    let expected: Vec<String> = match expect.get("actions") {
        Some(value) => {
            serde_json::from_value(value.clone()).map_err(|e| format!("invalid `actions`: {e}"))?
        }
        None => return Err("expectation is missing `actions`".to_owned()),
    };
    let kinds: Vec<&str> = actual.iter().map(action_kind).collect();
    let mut problems = String::new();
    if kinds != expected {
        let _ = write!(problems, "actions are {kinds:?}, expected {expected:?}; ");
    }
    if let Some(to) = expect
        .get("rollback_to")
        .and_then(serde_json::Value::as_str)
    {
        let rolled_to = actual.iter().find_map(|action| match action {
            crate::Action::Rollback(request) => Some(request.to_version.as_str()),
            _ => None,
        });
        if rolled_to != Some(to) {
            let _ = write!(
                problems,
                "rollback target is {rolled_to:?}, expected `{to}`; "
            );
        }
    }
    finish(problems)
}

/// Returns the lowercase kind of `action`: `notify`, `remediate`, `rollback`
/// or `hold`.
pub fn action_kind(action: &crate::Action) -> &'static str {
    match action {
        crate::Action::Notify(_) => "notify",
        crate::Action::Remediate(_) => "remediate",
        crate::Action::Rollback(_) => "rollback",
        crate::Action::Hold(_) => "hold",
    }
}

fn finish(problems: String) -> Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.trim_end_matches("; ").to_owned())
    }
}
