//! [`PolicyRuntime`]: the engine's single entry point for decisions.

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use super::events::error_chain;
use super::types::{
    Action, AssetStatus, Comparison, DriftAssessment, LoadPlan, ProfileInfo, ServiceStatus,
};
use super::{
    DEFAULT_POLICY_WASM, DEFAULT_THRESHOLDS_RHAI, Decision, EventSink, Fallback, LoadError, Policy,
    PolicyConfig, PolicyError, PolicyEvent, PolicySource, ScriptPolicy, Settings, WasmPolicy,
    validate,
};

/// A decision and how it was reached.
#[derive(Debug)]
pub struct Outcome<T> {
    /// The decision the host acts on: the policy's, or the fallback's when
    /// `error` is set.
    pub value: T,
    /// Name of the policy that was asked.
    pub policy: String,
    /// Digest of the policy that was asked; recorded in the audit log.
    pub digest: String,
    /// The policy's error when the fallback decided instead of the policy.
    pub error: Option<PolicyError>,
    /// Time spent, including the fallback.
    pub elapsed: Duration,
}

impl<T> Outcome<T> {
    /// Returns whether the fallback made this decision.
    pub fn used_fallback(&self) -> bool {
        self.error.is_some()
    }
}

/// A loaded policy and the file it came from, for change detection.
#[derive(Debug)]
struct Loaded<P: ?Sized> {
    source: PolicySource,
    stamp: Option<(SystemTime, u64)>,
    policy: Arc<P>,
}

impl<P: ?Sized> Clone for Loaded<P> {
    fn clone(&self) -> Self {
        Self {
            source: self.source.clone(),
            stamp: self.stamp,
            policy: Arc::clone(&self.policy),
        }
    }
}

/// Asks the configured policies for decisions, with fallback, validation,
/// events and hot reload. Cheap to share: every method takes `&self`.
pub struct PolicyRuntime {
    config: PolicyConfig,
    decisions: [RwLock<Loaded<dyn Policy>>; 3],
    thresholds: RwLock<Option<Loaded<ScriptPolicy>>>,
    base_settings: Arc<Settings>,
    events: Arc<dyn EventSink>,
}

impl std::fmt::Debug for PolicyRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyRuntime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

fn index(decision: Decision) -> usize {
    match decision {
        Decision::Drift => 0,
        Decision::Sequencer => 1,
        Decision::Remediation => 2,
    }
}

impl PolicyRuntime {
    /// Loads every configured policy. Fails when a file cannot be loaded or a
    /// policy lacks a decision it is configured for; nothing runs until the
    /// configuration is fixed.
    pub fn new(config: &PolicyConfig, events: Arc<dyn EventSink>) -> Result<Self, LoadError> {
        let problems = config.sandbox.validate();
        if !problems.is_empty() {
            return Err(LoadError::Limits { problems });
        }
        let mut loaded: Vec<(PolicySource, Arc<dyn Policy>)> = Vec::new();
        let mut slots = Vec::with_capacity(3);
        for decision in Decision::ALL {
            let source = config.source(decision).clone();
            let policy = match loaded.iter().find(|(known, _)| *known == source) {
                Some((_, policy)) => Arc::clone(policy),
                None => {
                    let policy = load_decision_policy(&source, &config.sandbox)?;
                    loaded.push((source.clone(), Arc::clone(&policy)));
                    policy
                }
            };
            require(&*policy, decision)?;
            slots.push(RwLock::new(Loaded {
                stamp: stamp(&source.0),
                source,
                policy,
            }));
        }
        let thresholds = match &config.thresholds {
            Some(source) => Some(Loaded {
                stamp: stamp(&source.0),
                policy: Arc::new(load_thresholds(source, &config.sandbox)?),
                source: source.clone(),
            }),
            None => None,
        };
        let [drift, sequencer, remediation]: [RwLock<Loaded<dyn Policy>>; 3] =
            match slots.try_into() {
                Ok(slots) => slots,
                Err(_) => unreachable!("one slot per decision"),
            };
        Ok(Self {
            config: config.clone(),
            decisions: [drift, sequencer, remediation],
            thresholds: RwLock::new(thresholds),
            base_settings: Arc::new(config.settings.clone()),
            events,
        })
    }

    /// Creates a runtime in which `policy` makes every decision it
    /// implements and the fallback makes the others. Used by
    /// `umbra policy eval` and by tests of single-decision policies.
    pub fn for_policy(
        policy: Arc<dyn Policy>,
        source: PolicySource,
        thresholds: Option<PolicySource>,
        config: &PolicyConfig,
        events: Arc<dyn EventSink>,
    ) -> Result<Self, LoadError> {
        let slot = || {
            RwLock::new(Loaded {
                stamp: stamp(&source.0),
                source: source.clone(),
                policy: Arc::clone(&policy),
            })
        };
        let thresholds = match thresholds {
            Some(source) => Some(Loaded {
                stamp: stamp(&source.0),
                policy: Arc::new(load_thresholds(&source, &config.sandbox)?),
                source,
            }),
            None => None,
        };
        let mut config = config.clone();
        config.drift = source.clone();
        config.sequencer = source.clone();
        config.remediation = source.clone();
        Ok(Self {
            base_settings: Arc::new(config.settings.clone()),
            decisions: [slot(), slot(), slot()],
            thresholds: RwLock::new(thresholds),
            config,
            events,
        })
    }

    /// Returns the policy that currently makes `decision`.
    pub fn policy(&self, decision: Decision) -> Arc<dyn Policy> {
        Arc::clone(
            &self.decisions[index(decision)]
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .policy,
        )
    }

    /// Returns the settings a policy gets for `asset`: the configured settings
    /// overridden by the thresholds script. A failing thresholds script is
    /// recorded as a policy error and the configured settings are used.
    pub fn settings_for(&self, asset: &AssetStatus) -> Arc<Settings> {
        self.settings_for_decision(asset, Decision::Drift)
    }

    fn settings_for_decision(&self, asset: &AssetStatus, decision: Decision) -> Arc<Settings> {
        let thresholds = self
            .thresholds
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|t| Arc::clone(&t.policy));
        let Some(script) = thresholds else {
            return Arc::clone(&self.base_settings);
        };
        match script.thresholds(&self.base_settings, asset) {
            Ok(computed) => {
                let mut settings = (*self.base_settings).clone();
                settings.extend(computed);
                Arc::new(settings)
            }
            Err(error) => {
                let message = error_chain(&error);
                tracing::warn!(%decision, script = script.name(), subject = %asset.asset,
                    "thresholds script failed, using the configured settings: {message}");
                self.events.record(PolicyEvent::PolicyError {
                    decision,
                    policy: script.name().to_owned(),
                    digest: script.digest().to_owned(),
                    kind: error.kind().to_owned(),
                    message,
                    subject: asset.asset.clone(),
                });
                Arc::clone(&self.base_settings)
            }
        }
    }

    /// Assesses drift for `asset`.
    pub fn assess_drift(
        &self,
        asset: &AssetStatus,
        comparisons: &[Comparison],
    ) -> Outcome<DriftAssessment> {
        let settings = self.settings_for(asset);
        self.decide_with(
            Decision::Drift,
            &asset.asset,
            |policy| policy.assess(&settings, asset, comparisons),
            validate::drift,
            || Fallback::assess_drift(&settings, comparisons),
        )
    }

    /// Chooses the next load plan for the shadow of `asset`.
    pub fn next_plan(
        &self,
        asset: &AssetStatus,
        profiles: &[ProfileInfo],
    ) -> Outcome<Option<LoadPlan>> {
        let settings = self.settings_for(asset);
        self.decide_with(
            Decision::Sequencer,
            &asset.asset,
            |policy| policy.next_plan(&settings, asset, profiles),
            |plan| validate::plan(plan, profiles),
            || Fallback::next_plan(profiles),
        )
    }

    /// Returns remediation actions for `service`. Settings come from the
    /// thresholds script evaluated for the service's first asset.
    pub fn remediate(
        &self,
        service: &ServiceStatus,
        assets: &[AssetStatus],
    ) -> Outcome<Vec<Action>> {
        let settings = match assets.first() {
            Some(asset) => self.settings_for_decision(asset, Decision::Remediation),
            None => Arc::clone(&self.base_settings),
        };
        self.decide_with(
            Decision::Remediation,
            &service.service,
            |policy| policy.decide(&settings, service, assets),
            |actions| validate::actions(actions, assets),
            || Fallback::decide(&settings, service, assets),
        )
    }

    fn decide_with<T>(
        &self,
        decision: Decision,
        subject: &str,
        ask: impl FnOnce(&dyn Policy) -> Result<T, PolicyError>,
        check: impl FnOnce(&T) -> Result<(), String>,
        fallback: impl FnOnce() -> T,
    ) -> Outcome<T> {
        let started = Instant::now();
        let policy = self.policy(decision);
        let span = tracing::debug_span!("policy", %decision, policy = policy.name(), policy_digest = policy.digest(), subject);
        let _entered = span.enter();

        let result = ask(&*policy).and_then(|value| match check(&value) {
            Ok(()) => Ok(value),
            Err(problem) => Err(PolicyError::InvalidOutput {
                policy: policy.name().to_owned(),
                decision,
                problem,
            }),
        });
        let (value, error) = match result {
            Ok(value) => (value, None),
            Err(error) => {
                self.record_error(&error, policy.name(), policy.digest(), decision, subject);
                (fallback(), Some(error))
            }
        };
        Outcome {
            value,
            policy: policy.name().to_owned(),
            digest: policy.digest().to_owned(),
            error,
            elapsed: started.elapsed(),
        }
    }

    fn record_error(
        &self,
        error: &PolicyError,
        policy: &str,
        digest: &str,
        decision: Decision,
        subject: &str,
    ) {
        let message = error_chain(error);
        tracing::warn!(%decision, policy, policy_digest = digest, subject, kind = error.kind(), "policy failed, fallback decided: {message}");
        self.events.record(PolicyEvent::PolicyError {
            decision,
            policy: policy.to_owned(),
            digest: digest.to_owned(),
            kind: error.kind().to_owned(),
            message,
            subject: subject.to_owned(),
        });
    }

    /// Reloads policy files whose modification time or size changed. A file
    /// that fails to load, or no longer implements a decision it serves,
    /// leaves the previous policy in place and records why. Returns the
    /// number of policies replaced.
    pub fn reload_changed(&self) -> usize {
        let mut replaced = 0;
        let mut attempted: Vec<(PolicySource, Option<Arc<dyn Policy>>)> = Vec::new();
        for decision in Decision::ALL {
            let slot = &self.decisions[index(decision)];
            let current = slot.read().unwrap_or_else(PoisonError::into_inner).clone();
            if current.source.is_builtin() {
                continue;
            }
            let now = stamp(&current.source.0);
            if now.is_none() || now == current.stamp {
                continue;
            }
            let candidate = match attempted
                .iter()
                .find(|(source, _)| *source == current.source)
            {
                Some((_, candidate)) => candidate.clone(),
                None => {
                    let candidate = self.try_reload(&current.source, &*current.policy, decision);
                    attempted.push((current.source.clone(), candidate.clone()));
                    candidate
                }
            };
            let mut slot = slot.write().unwrap_or_else(PoisonError::into_inner);
            slot.stamp = now;
            if let Some(policy) = candidate
                && require(&*policy, decision).is_ok()
            {
                slot.policy = policy;
                replaced += 1;
            }
        }
        replaced + self.reload_thresholds()
    }

    fn try_reload(
        &self,
        source: &PolicySource,
        current: &dyn Policy,
        decision: Decision,
    ) -> Option<Arc<dyn Policy>> {
        let result = super::load_file(&source.0, &self.config.sandbox).and_then(|policy| {
            for decision in Decision::ALL
                .into_iter()
                .filter(|d| self.config.source(*d) == source)
            {
                require(&*policy, decision)?;
            }
            Ok(policy)
        });
        match result {
            Ok(policy) if policy.digest() == current.digest() => None,
            Ok(policy) => {
                tracing::info!(source = %source, %decision, digest = policy.digest(), "policy reloaded");
                self.events.record(PolicyEvent::PolicyReloaded {
                    source: source.to_string(),
                    previous_digest: current.digest().to_owned(),
                    digest: policy.digest().to_owned(),
                });
                Some(policy)
            }
            Err(error) => {
                let message = error_chain(&error);
                tracing::error!(source = %source, kept = current.digest(), "policy reload failed, keeping the previous version: {message}");
                self.events.record(PolicyEvent::PolicyReloadFailed {
                    source: source.to_string(),
                    kept_digest: current.digest().to_owned(),
                    message,
                });
                None
            }
        }
    }

    fn reload_thresholds(&self) -> usize {
        let current = self
            .thresholds
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(current) = current else {
            return 0;
        };
        let now = stamp(&current.source.0);
        if current.source.is_builtin() || now.is_none() || now == current.stamp {
            return 0;
        }
        let result = load_thresholds(&current.source, &self.config.sandbox);
        let mut slot = self
            .thresholds
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(slot) = slot.as_mut() else {
            return 0;
        };
        slot.stamp = now;
        match result {
            Ok(script) if script.digest() == current.policy.digest() => 0,
            Ok(script) => {
                self.events.record(PolicyEvent::PolicyReloaded {
                    source: current.source.to_string(),
                    previous_digest: current.policy.digest().to_owned(),
                    digest: script.digest().to_owned(),
                });
                slot.policy = Arc::new(script);
                1
            }
            Err(error) => {
                let message = error_chain(&error);
                tracing::error!(source = %current.source, "thresholds reload failed, keeping the previous version: {message}");
                self.events.record(PolicyEvent::PolicyReloadFailed {
                    source: current.source.to_string(),
                    kept_digest: current.policy.digest().to_owned(),
                    message,
                });
                0
            }
        }
    }
}

impl PolicyConfig {
    /// Returns the source configured for `decision`.
    pub fn source(&self, decision: Decision) -> &PolicySource {
        match decision {
            Decision::Drift => &self.drift,
            Decision::Sequencer => &self.sequencer,
            Decision::Remediation => &self.remediation,
        }
    }
}

fn load_decision_policy(
    source: &PolicySource,
    limits: &super::SandboxLimits,
) -> Result<Arc<dyn Policy>, LoadError> {
    if source.is_builtin() {
        return Ok(Arc::new(WasmPolicy::load(
            "builtin:default",
            DEFAULT_POLICY_WASM,
            limits.clone(),
        )?));
    }
    super::load_file(&source.0, limits)
}

fn load_thresholds(
    source: &PolicySource,
    limits: &super::SandboxLimits,
) -> Result<ScriptPolicy, LoadError> {
    let script = if source.is_builtin() {
        ScriptPolicy::load(
            "builtin:thresholds",
            DEFAULT_THRESHOLDS_RHAI,
            limits.clone(),
        )?
    } else {
        let text = std::fs::read_to_string(&source.0).map_err(|error| LoadError::Read {
            path: source.0.clone(),
            source: error,
        })?;
        ScriptPolicy::load(&source.to_string(), &text, limits.clone())?
    };
    if !script.has_thresholds() {
        return Err(LoadError::NoThresholds {
            name: script.name().to_owned(),
        });
    }
    Ok(script)
}

fn require(policy: &dyn Policy, decision: Decision) -> Result<(), LoadError> {
    if policy.implements(decision) {
        return Ok(());
    }
    let export = if policy.name().ends_with(".rhai") {
        match decision {
            Decision::Drift => "fn assess(asset, comparisons)",
            Decision::Sequencer => "fn next_plan(asset, profiles)",
            Decision::Remediation => "fn decide(service, assets)",
        }
    } else {
        decision.interface()
    };
    Err(LoadError::MissingExport {
        name: policy.name().to_owned(),
        decision,
        export: export.to_owned(),
    })
}
