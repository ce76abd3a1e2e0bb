//! Decision cases: one decision's input, settings and optional expectation,
//! as JSON. `umbra policy eval` runs them, and so do the tests of the default
//! policy. The format is the guest SDK's fixture format:
//!
//! ```json
//! { "decision": "drift", "settings": { "drift.tolerance": "0.1" },
//!   "input": { "asset": { }, "comparisons": [ ] },
//!   "expect": { "level": "Moderate", "score_min": 0.6 } }
//! ```
//!
//! Inputs by decision: `drift` takes `asset` and `comparisons`, `sequencer`
//! takes `asset` and `profiles`, `remediation` takes `service` and `assets`.
//! Expectations: `level`, `score_min`, `score_max`, `reason_contains` for
//! drift; `profile` (a name or `null`) for the sequencer; `actions` (kinds in
//! order) and `rollback_to` for remediation.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::events::error_chain;
use super::{Decision, PolicyRuntime, Settings};

/// One decision case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Decision to make.
    pub decision: Decision,
    /// Settings for the call; they override the configured ones.
    #[serde(default)]
    pub settings: Settings,
    /// Arguments by WIT parameter name.
    pub input: Value,
    /// Expected decision, checked when present.
    #[serde(default)]
    pub expect: Option<Value>,
    /// Optional name; ignored by the runtime.
    #[serde(default)]
    pub name: Option<String>,
}

/// The result of running a case.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseResult {
    /// The decision the host would act on, in its JSON form.
    pub decision: Value,
    /// Digest of the policy asked.
    pub policy_digest: String,
    /// The policy's error when the fallback decided instead.
    pub policy_error: Option<String>,
    /// Differences from the case's expectation; empty when it matched or
    /// when the case has none.
    pub mismatches: Vec<String>,
}

fn argument<T: DeserializeOwned>(input: &Value, name: &str) -> Result<T, String> {
    let value = input
        .get(name)
        .cloned()
        .ok_or_else(|| format!("input is missing `{name}`"))?;
    serde_json::from_value(value).map_err(|error| format!("invalid input `{name}`: {error}"))
}

impl Case {
    /// Parses a case from JSON text.
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|error| format!("invalid case: {error}"))
    }

    /// Runs the case on `runtime`. Returns an error only when the input does
    /// not deserialize; a failing policy shows up in the result.
    pub fn run(&self, runtime: &PolicyRuntime) -> Result<CaseResult, String> {
        let (decision, digest, error) = match self.decision {
            Decision::Drift => {
                let asset = argument(&self.input, "asset")?;
                let comparisons: Vec<_> = argument(&self.input, "comparisons")?;
                let outcome = runtime.assess_drift(&asset, &comparisons);
                (to_value(&outcome.value), outcome.digest, outcome.error)
            }
            Decision::Sequencer => {
                let asset = argument(&self.input, "asset")?;
                let profiles: Vec<_> = argument(&self.input, "profiles")?;
                let outcome = runtime.next_plan(&asset, &profiles);
                (to_value(&outcome.value), outcome.digest, outcome.error)
            }
            Decision::Remediation => {
                let service = argument(&self.input, "service")?;
                let assets: Vec<_> = argument(&self.input, "assets")?;
                let outcome = runtime.remediate(&service, &assets);
                (to_value(&outcome.value), outcome.digest, outcome.error)
            }
        };
        let mismatches = match &self.expect {
            Some(expect) => check(self.decision, &decision, expect),
            None => Vec::new(),
        };
        Ok(CaseResult {
            decision,
            policy_digest: digest,
            policy_error: error.as_ref().map(|e| error_chain(e)),
            mismatches,
        })
    }
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    // NaN cannot reach here: outputs are validated or come from the fallback.
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// An expectation, typed so that a misspelt or mistyped field is an error
/// instead of a check that silently passes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expectation {
    level: Option<String>,
    score_min: Option<f64>,
    score_max: Option<f64>,
    reason_contains: Option<String>,
    /// Present and `null` means "no plan"; absent means "not checked".
    #[serde(default, deserialize_with = "present")]
    profile: Option<Option<String>>,
    actions: Option<Vec<String>>,
    rollback_to: Option<String>,
}

fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

/// Compares a decision's JSON form with an expectation.
pub(crate) fn check(decision: Decision, actual: &Value, expect: &Value) -> Vec<String> {
    let expect: Expectation = match serde_json::from_value(expect.clone()) {
        Ok(expect) => expect,
        Err(error) => return vec![format!("invalid expectation: {error}")],
    };
    let mut problems = Vec::new();
    let misplaced = match decision {
        Decision::Drift => {
            expect.profile.is_some() || expect.actions.is_some() || expect.rollback_to.is_some()
        }
        Decision::Sequencer => {
            expect.level.is_some()
                || expect.score_min.is_some()
                || expect.score_max.is_some()
                || expect.reason_contains.is_some()
                || expect.actions.is_some()
                || expect.rollback_to.is_some()
        }
        Decision::Remediation => {
            expect.level.is_some()
                || expect.score_min.is_some()
                || expect.score_max.is_some()
                || expect.reason_contains.is_some()
                || expect.profile.is_some()
        }
    };
    if misplaced {
        problems.push(format!(
            "invalid expectation: it names fields that do not apply to a {decision} decision"
        ));
    }
    match decision {
        Decision::Drift => check_drift(actual, &expect, &mut problems),
        Decision::Sequencer => {
            if let Some(expected) = &expect.profile {
                let profile = actual.get("profile").and_then(Value::as_str);
                if profile != expected.as_deref() {
                    problems.push(format!("profile is {profile:?}, expected {expected:?}"));
                }
            }
        }
        Decision::Remediation => check_remediation(actual, &expect, &mut problems),
    }
    problems
}

fn check_drift(actual: &Value, expect: &Expectation, problems: &mut Vec<String>) {
    if let Some(level) = &expect.level {
        let actual_level = actual.get("level").and_then(Value::as_str);
        if actual_level != Some(level.as_str()) {
            let actual_text =
                actual_level.map_or_else(|| "missing".to_owned(), |level| format!("\"{level}\""));
            problems.push(format!("level is {actual_text}, expected \"{level}\""));
        }
    }
    let score = actual
        .get("score")
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN);
    if let Some(min) = expect.score_min
        && (score.is_nan() || score < min)
    {
        problems.push(format!("score {score} is below {min}"));
    }
    if let Some(max) = expect.score_max
        && (score.is_nan() || score > max)
    {
        problems.push(format!("score {score} is above {max}"));
    }
    if let Some(needle) = &expect.reason_contains {
        let reasons = actual
            .get("reasons")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !reasons
            .iter()
            .filter_map(Value::as_str)
            .any(|reason| reason.contains(needle.as_str()))
        {
            problems.push(format!("no reason contains `{needle}`"));
        }
    }
}

fn check_remediation(actual: &Value, expect: &Expectation, problems: &mut Vec<String>) {
    let actions = actual.as_array().cloned().unwrap_or_default();
    let kinds: Vec<String> = actions
        .iter()
        .filter_map(|action| {
            action
                .as_object()
                .and_then(|object| object.keys().next().cloned())
        })
        .map(|kind| kind.to_lowercase())
        .collect();
    if let Some(expected) = &expect.actions
        && kinds != *expected
    {
        problems.push(format!("actions are {kinds:?}, expected {expected:?}"));
    }
    if let Some(to) = &expect.rollback_to {
        let target = actions
            .iter()
            .find_map(|action| action.get("Rollback")?.get("to_version")?.as_str());
        if target != Some(to.as_str()) {
            problems.push(format!("rollback target is {target:?}, expected `{to}`"));
        }
    }
}
