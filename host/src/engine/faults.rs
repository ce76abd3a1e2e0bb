//! Failure profiles on process shadows: network faults through the shadow's
//! fault-injecting proxy, and resource exhaustion of its process tree. Both
//! end with the profile, and whatever could outlive a crash of Umbra is in
//! the fault ledger, which the next start reverses.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::asset::{AssetState, Stress};
use super::controller::Controller;
use super::events::EngineEvent;
use crate::fault::{FaultProxy, run_resource_fault};

/// Time a profile's faults outlast its planned duration, so the end of the
/// load run sees them too; the engine clears them as soon as the run ends.
const FAULT_GRACE: Duration = Duration::from_secs(2);

impl Controller {
    /// Starts the fault proxy in front of a new shadow.
    pub async fn start_proxy(&self, asset: &mut AssetState) {
        if asset.proxy.is_some() {
            self.stop_proxy(asset).await;
        }
        let Some(shadow) = &asset.shadow else {
            return;
        };
        let upstream = SocketAddr::from(([127, 0, 0, 1], shadow.port()));
        let name = format!("{}/shadow", asset.name());
        match FaultProxy::start_recorded(&self.faults, &name, upstream).await {
            Ok(proxy) => asset.proxy = Some(proxy),
            Err(error) => {
                // Load still reaches the shadow directly; only network
                // faults are unavailable.
                tracing::warn!(asset = asset.name(), %error, "cannot start the fault proxy");
                asset.proxy = None;
            }
        }
    }

    /// Stops the shadow's fault proxy, keeping its counters in the asset's
    /// totals, and pauses the mirror's copies to it.
    pub async fn stop_proxy(&self, asset: &mut AssetState) {
        asset.traffic.pause();
        if let Some(proxy) = asset.proxy.take() {
            let stats = proxy.stats();
            super::traffic::accumulate(&mut asset.traffic.retired_proxies, &stats);
            proxy.shutdown().await;
        }
    }

    /// Applies the network and resource faults of the profile in `stress`
    /// to the shadow for `duration`.
    pub fn inject_faults(&self, asset: &AssetState, stress: &mut Stress, duration: Duration) {
        if asset.pg.is_some() {
            self.pg_inject_faults(asset, stress, duration);
            return;
        }
        let profile = &stress.profile;
        if let Some(network) = &profile.network {
            let result = match &asset.proxy {
                Some(proxy) => proxy
                    .set_faults_for(network.clone(), duration + FAULT_GRACE)
                    .map_err(|error| error.to_string()),
                None => Err("the shadow has no fault proxy".to_owned()),
            };
            if let Err(error) = result {
                self.recorder.record(EngineEvent::ActionRefused {
                    asset: asset.name().to_owned(),
                    action: format!("network faults of profile `{}`", profile.name),
                    reason: error,
                });
            }
        }
        if let (Some(fault), Some(shadow)) = (&profile.resource, &asset.shadow) {
            let cancel = CancellationToken::new();
            stress.fault_guard = Some(cancel.clone().drop_guard());
            let ledger = self.faults.clone();
            let fault = fault.clone();
            let pid = shadow.pid();
            let data_dir = shadow.record.data_dir.clone();
            let recorder = self.recorder.clone();
            let asset_name = asset.name().to_owned();
            let profile_name = profile.name.clone();
            tokio::spawn(async move {
                let result =
                    run_resource_fault(&ledger, &fault, pid, Some(&data_dir), duration, cancel)
                        .await;
                if let Err(error) = result {
                    recorder.record(EngineEvent::ActionRefused {
                        asset: asset_name,
                        action: format!("resource fault of profile `{profile_name}`"),
                        reason: error.to_string(),
                    });
                }
            });
        }
    }
}
