//! Builds the status report from the controller's state.

use super::asset::{AssetState, phase_name};
use super::controller::{Controller, level_name};
use super::postgres::{PgState, PgTwin};
use super::process::Instance;
use super::status::{AssetReport, InstanceReport, ProfileReport, ServiceReport, StatusReport};

fn instance(instance: &Instance) -> InstanceReport {
    InstanceReport {
        version: instance.record.version.clone(),
        pid: instance.pid(),
        port: instance.port(),
        proxy_port: None,
    }
}

pub(super) fn build(controller: &Controller, ts_ms: i64) -> StatusReport {
    let threshold = controller.config.confidence.threshold;
    let services = controller
        .book
        .order()
        .iter()
        .filter_map(|name| {
            let config = controller.config.service(name)?;
            let confidence = controller.book.service_confidence(name).unwrap_or(1.0);
            Some(ServiceReport {
                name: name.clone(),
                criticality: config.criticality,
                confidence,
                threshold,
                below_threshold: confidence < threshold,
                depends_on: config.depends_on.clone(),
            })
        })
        .collect();
    let assets = controller.assets.iter().map(asset_report).collect();
    StatusReport {
        tick: controller.tick,
        ts_ms,
        dry_run: controller.config.engine.dry_run,
        services,
        assets,
    }
}

fn asset_report(asset: &AssetState) -> AssetReport {
    let profile = asset
        .control
        .as_ref()
        .map(|control| (&control.stress, "control"))
        .or(asset.stress.as_ref().map(|stress| (stress, "shadow")))
        .map(|(stress, role)| ProfileReport {
            name: stress.profile.name.clone(),
            role: role.to_owned(),
            elapsed_ms: stress.run.elapsed().as_millis() as u64,
            duration_ms: stress.run.duration.as_millis() as u64,
        });
    let report = AssetReport {
        name: asset.name().to_owned(),
        service: asset.config.service.clone(),
        kind: "process".to_owned(),
        shadow_kind: if asset.twin.is_some() {
            "model"
        } else if asset.pg.is_some() {
            "postgres"
        } else {
            "process"
        }
        .to_owned(),
        version: asset.version.clone(),
        version_status: asset.status.as_str().to_owned(),
        known_good_version: asset.known_good.clone(),
        phase: phase_name(asset.phase).to_owned(),
        live: asset.live.as_ref().map(instance),
        shadow: asset.shadow.as_ref().map(|shadow| InstanceReport {
            proxy_port: asset.proxy.as_ref().map(|p| p.listen_addr().port()),
            ..instance(shadow)
        }),
        control: asset
            .control
            .as_ref()
            .and_then(|c| c.instance.as_ref())
            .map(instance),
        drift_score: asset.drift.as_ref().map(|d| d.score),
        drift_level: asset.drift.as_ref().map(|d| level_name(d.level).to_owned()),
        failure_probability: asset.probability,
        probability_source: asset.probability_source.clone(),
        confidence: asset.confidence,
        peak_passed: asset.peak_passed,
        shadow_failure: asset.shadow_failure.clone(),
        profile,
        live_requests_seen: asset.live_requests_seen(),
        mirror: asset.traffic.report(),
        live_error: None,
    };
    match &asset.pg {
        Some(pg) => postgres_report(asset, pg, report),
        None => report,
    }
}

/// The instances of a postgres asset: its live cluster while Umbra is connected to it,
/// and its clones.
fn postgres_report(asset: &AssetState, pg: &PgState, report: AssetReport) -> AssetReport {
    let twin = |twin: &PgTwin| InstanceReport {
        version: twin.version.clone(),
        pid: twin.pid(),
        port: twin.port(),
        proxy_port: None,
    };
    let live = pg.live_client.as_ref().map(|_| InstanceReport {
        version: asset.version.clone(),
        pid: pg
            .section
            .live
            .data_dir
            .as_deref()
            .and_then(crate::postgres::postmaster_pid)
            .unwrap_or(0),
        port: asset.config.live_port(),
        proxy_port: None,
    });
    let live_error = match live {
        Some(_) => None,
        None => pg.last_error.clone(),
    };
    AssetReport {
        kind: "postgres".to_owned(),
        live,
        live_error,
        shadow: pg.shadow.as_ref().map(twin),
        control: pg.control.as_ref().map(twin),
        ..report
    }
}
