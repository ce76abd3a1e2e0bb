//! Umbra's default policy: drift, load sequencing and remediation.
//!
//! Every threshold is a setting (see `policies/thresholds.rhai`, which the
//! host evaluates per asset and passes in); the defaults below apply when a
//! setting is absent.
//!
//! - **Drift.** A metric drifts when its shift is statistically significant
//!   (Mann–Whitney p-value below `drift.alpha`), and its relative change in
//!   the worse direction exceeds both `drift.tolerance` and
//!   `drift.noise_multiple` times its noise floor. Each drifting metric
//!   contributes `1 - 0.5 * exp(-(effect - tolerance) / tolerance)`: 0.5 just
//!   past the tolerance, rising towards 1 the further past it is. The score
//!   combines contributions as independent evidence,
//!   `1 - Π(1 - contribution)`, and maps to a level through
//!   `drift.moderate` and `drift.significant`.
//! - **Sequencer.** A candidate version that has not passed a peak run gets
//!   one. Then significant drift runs the failure scenarios not yet run,
//!   moderate drift a peak profile, and anything less the normal profile.
//! - **Remediation.** A shadow that failed under load, with a known-good
//!   version other than the running one, rolls the live asset back. Otherwise
//!   the failure probability decides: at or above `remediation.remediate_probability`
//!   a remediation procedure runs, at or above `remediation.notify_probability`
//!   operators are notified, else the policy holds.

mod drift;
mod remediation;
mod sequencer;

/// The default policy.
pub struct DefaultPolicy;

umbra_guest::export!(DefaultPolicy);

#[cfg(test)]
mod tests {
    use super::DefaultPolicy;
    use umbra_guest::testing::Harness;

    #[test]
    fn fixtures_pass() {
        let failures = Harness::new()
            .drift::<DefaultPolicy>()
            .sequencer::<DefaultPolicy>()
            .remediation::<DefaultPolicy>()
            .run_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"));
        assert!(
            failures.is_empty(),
            "failed fixtures:\n{}",
            failures.join("\n")
        );
    }
}
