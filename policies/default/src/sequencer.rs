//! Load sequencing: escalates the shadow's load with drift.

use umbra_guest::{AssetStatus, DriftLevel, LoadPlan, ProfileInfo, ProfileKind, VersionStatus};

use crate::DefaultPolicy;

impl umbra_guest::Sequencer for DefaultPolicy {
    fn next_plan(asset: AssetStatus, profiles: Vec<ProfileInfo>) -> Option<LoadPlan> {
        let level = asset
            .drift
            .as_ref()
            .map_or(DriftLevel::None, |drift| drift.level);

        if asset.version_status == VersionStatus::Candidate
            && !asset.peak_passed
            && let Some(peak) = first_of_kind(&profiles, ProfileKind::Peak)
        {
            return Some(plan(
                peak,
                format!(
                    "version {} needs a peak run to become known-good",
                    asset.version
                ),
            ));
        }

        if level == DriftLevel::Significant {
            let pending = profiles.iter().find(|profile| {
                profile.kind == ProfileKind::Failure
                    && !asset.completed_profiles.contains(&profile.name)
            });
            if let Some(scenario) = pending {
                return Some(plan(
                    scenario,
                    "significant drift: running failure scenarios".to_owned(),
                ));
            }
        }

        if level == DriftLevel::Moderate
            && let Some(peak) = first_of_kind(&profiles, ProfileKind::Peak)
        {
            return Some(plan(
                peak,
                "moderate drift: checking behaviour under peak load".to_owned(),
            ));
        }

        first_of_kind(&profiles, ProfileKind::Normal)
            .map(|normal| plan(normal, "baseline load".to_owned()))
    }
}

fn first_of_kind(profiles: &[ProfileInfo], kind: ProfileKind) -> Option<&ProfileInfo> {
    profiles.iter().find(|profile| profile.kind == kind)
}

fn plan(profile: &ProfileInfo, reason: String) -> LoadPlan {
    LoadPlan {
        profile: profile.name.clone(),
        duration_ms: 0,
        reason,
    }
}
