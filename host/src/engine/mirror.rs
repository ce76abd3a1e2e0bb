//! Mirrored live traffic as the shadow's normal profile.
//!
//! An asset with `[asset.mirror]` gets a mirroring proxy on `mirror.listen` in front of
//! its live instance, for as long as the engine runs. While the shadow calibrates or
//! runs at baseline, the proxy copies live's requests to the shadow's fault proxy and
//! the engine sends no synthetic baseline load. While a stress profile runs, and while
//! no shadow is up, copying is paused: stress profiles keep their synthetic load, at
//! the rate the profile sets. A new shadow (after a deployment, a rollback or a
//! restart) gets the copies from the next tick on.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::MirrorSection;
use crate::fault::{MirrorProxy, MirrorStats, ProxyStats, TcpMirrorProxy};
use crate::policy::types::ShadowPhase;
use crate::store::SeriesSamples;

use super::asset::AssetState;
use super::controller::{Controller, push_samples};
use super::events::EngineEvent;
use super::metrics::TickValues;
use super::traffic::{self, TrafficSnapshot};
use super::trial::TickLoad;

/// Time between two attempts to start a mirror that could not listen.
const RETRY_START: Duration = Duration::from_secs(5);

/// A running mirroring proxy of either protocol.
#[derive(Debug)]
pub enum Mirror {
    /// HTTP/1.1.
    Http(MirrorProxy),
    /// Plain TCP with framing.
    Tcp(TcpMirrorProxy),
}

impl Mirror {
    /// Starts the proxy `section` describes in front of live on `live_port`, with
    /// copying paused.
    pub async fn start(
        section: &MirrorSection,
        live_port: u16,
    ) -> Result<Mirror, crate::fault::ProxyError> {
        let live = SocketAddr::from(([127, 0, 0, 1], live_port));
        Ok(match section.framing {
            None => Mirror::Http(
                MirrorProxy::start_on(section.listen, live, None, section.http_config()).await?,
            ),
            Some(framing) => Mirror::Tcp(
                TcpMirrorProxy::start_on(section.listen, live, None, section.tcp_config(framing))
                    .await?,
            ),
        })
    }

    /// The address the live asset's clients use.
    pub fn listen_addr(&self) -> SocketAddr {
        match self {
            Mirror::Http(proxy) => proxy.listen_addr(),
            Mirror::Tcp(proxy) => proxy.listen_addr(),
        }
    }

    /// The proxy's counters.
    pub fn stats(&self) -> MirrorStats {
        match self {
            Mirror::Http(proxy) => proxy.stats(),
            Mirror::Tcp(proxy) => proxy.stats(),
        }
    }

    /// Points the copies at `shadow`, or pauses them.
    pub fn set_shadow(&self, shadow: Option<SocketAddr>) {
        match self {
            Mirror::Http(proxy) => proxy.set_shadow(shadow),
            Mirror::Tcp(proxy) => proxy.set_shadow(shadow),
        }
    }

    /// Where the copies go now.
    pub fn shadow(&self) -> Option<SocketAddr> {
        match self {
            Mirror::Http(proxy) => proxy.shadow(),
            Mirror::Tcp(proxy) => proxy.shadow(),
        }
    }
}

/// An asset's mirror and the counters of its shadows' earlier fault proxies.
#[derive(Debug)]
pub struct Traffic {
    /// The mirroring proxy, once it listens.
    pub mirror: Option<Mirror>,
    /// Earliest time of the next attempt to start the mirror.
    next_start: Instant,
    /// Whether the latest start failure was reported.
    reported_failure: bool,
    /// Counters of fault proxies of earlier shadows.
    pub retired_proxies: ProxyStats,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            mirror: None,
            next_start: Instant::now(),
            reported_failure: false,
            retired_proxies: ProxyStats::default(),
        }
    }
}

impl Traffic {
    /// Returns whether live traffic is the shadow's baseline load, in which case the
    /// engine starts no synthetic baseline run.
    pub fn mirrors(&self) -> bool {
        self.mirror.is_some()
    }

    /// The mirror as the status shows it.
    pub fn report(&self) -> Option<super::status::MirrorReport> {
        self.mirror
            .as_ref()
            .map(|mirror| super::status::MirrorReport {
                listen: mirror.listen_addr().to_string(),
                shadow: mirror.shadow().map(|shadow| shadow.to_string()),
                stats: mirror.stats(),
            })
    }

    /// Stops copies until the next tick routes them again, for a shadow going away.
    pub fn pause(&self) {
        if let Some(mirror) = &self.mirror {
            mirror.set_shadow(None);
        }
    }
}

impl Controller {
    /// Starts the asset's mirror if it is configured and not running yet. A mirror that
    /// cannot listen is reported once and tried again every 5 s; meanwhile the shadow
    /// gets synthetic baseline load.
    pub async fn ensure_mirror(&self, asset: &mut AssetState) {
        let Some(section) = &asset.config.mirror else {
            return;
        };
        if asset.traffic.mirror.is_some() || Instant::now() < asset.traffic.next_start {
            return;
        }
        match Mirror::start(section, asset.config.port).await {
            Ok(mirror) => {
                if asset.traffic.reported_failure {
                    self.recorder.record(EngineEvent::Notice {
                        asset: Some(asset.name().to_owned()),
                        severity: "info".to_owned(),
                        message: format!(
                            "the mirror listens on {}: the shadow's baseline load is live traffic again",
                            mirror.listen_addr()
                        ),
                    });
                }
                asset.traffic.reported_failure = false;
                asset.traffic.mirror = Some(mirror);
            }
            Err(error) => {
                asset.traffic.next_start = Instant::now() + RETRY_START;
                if !asset.traffic.reported_failure {
                    asset.traffic.reported_failure = true;
                    let error = error_chain(&error);
                    self.recorder.record(EngineEvent::Notice {
                        asset: Some(asset.name().to_owned()),
                        severity: "warning".to_owned(),
                        message: format!(
                            "cannot start the mirror: {error}; the shadow gets synthetic baseline load until it starts (retried every {} s)",
                            RETRY_START.as_secs()
                        ),
                    });
                }
            }
        }
    }

    /// Points the asset's mirror at the shadow while the shadow calibrates or runs at
    /// baseline, and pauses it otherwise. Also stops a synthetic baseline run that the
    /// mirror replaces, and records the proxies' counters.
    pub fn route_mirror(
        &self,
        asset: &mut AssetState,
        ts_ms: i64,
        samples: &mut Vec<SeriesSamples>,
    ) {
        route(asset);
        if asset.traffic.mirrors() {
            asset.baseline = None;
        }
        let snapshot = TrafficSnapshot {
            mirror: asset.traffic.mirror.as_ref().map(Mirror::stats),
            proxy: asset.proxy.as_ref().map(|proxy| {
                let mut total = proxy.stats();
                traffic::accumulate(&mut total, &asset.traffic.retired_proxies);
                total
            }),
        };
        if snapshot.mirror.is_none() && snapshot.proxy.is_none() {
            return;
        }
        self.telemetry.traffic.update(asset.name(), snapshot);
        if let Some(stats) = &snapshot.mirror {
            let values = to_tick_values(traffic::mirror_values(stats).iter().copied());
            let version = asset.version.clone();
            push_samples(samples, asset.name(), "live", &version, &values, ts_ms);
        }
        if let (Some(stats), Some(shadow)) = (&snapshot.proxy, &asset.shadow) {
            let values = to_tick_values(traffic::proxy_values(stats).iter().copied());
            let version = shadow.record.version.clone();
            push_samples(samples, asset.name(), "shadow", &version, &values, ts_ms);
        }
    }

    /// Routes every asset's mirror, for changes made outside a tick (deployments and
    /// rollbacks).
    pub fn route_mirrors(&mut self) {
        for asset in &self.assets {
            route(asset);
        }
    }
}

/// Sends copies to the shadow's fault proxy while the shadow is at baseline.
fn route(asset: &AssetState) {
    let Some(mirror) = &asset.traffic.mirror else {
        return;
    };
    let at_baseline = matches!(
        asset.phase,
        ShadowPhase::Calibrating | ShadowPhase::Baseline
    );
    let target = Controller::load_port(asset)
        .filter(|_| at_baseline && asset.stress.is_none())
        .map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
    if mirror.shadow() != target {
        tracing::debug!(asset = asset.name(), ?target, "mirror copies routed");
        mirror.set_shadow(target);
    }
}

/// Takes the shadow's own request metrics of the tick as the load it served, while its
/// baseline is mirrored traffic. The failure probability and the model's features then
/// follow the shadow at baseline as they follow a synthetic baseline run. These figures
/// are not stored as `umbra_asset_load_*`, which only the load generator writes.
pub fn observe_mirrored_load(
    asset: &mut AssetState,
    live: &TickValues,
    shadow: &TickValues,
    tick: Duration,
) {
    let mirrored = asset
        .traffic
        .mirror
        .as_ref()
        .and_then(Mirror::shadow)
        .is_some();
    if !mirrored || asset.stress.is_some() {
        return;
    }
    if let Some(load) = mirrored_load(live, shadow, tick) {
        asset.latest_load = Some(load);
    }
}

/// Returns the shadow's own figures for one tick as a [`TickLoad`], or `None` without
/// request metrics.
fn mirrored_load(live: &TickValues, shadow: &TickValues, tick: Duration) -> Option<TickLoad> {
    let rate = *shadow.get("request_rate")?;
    let requests = (rate * tick.as_secs_f64()).round().max(0.0) as u64;
    let error_rate = shadow.get("error_rate").copied().unwrap_or(0.0);
    Some(TickLoad {
        requests,
        errors: (error_rate * requests as f64).round() as u64,
        throughput_rps: rate,
        target_rps: live.get("request_rate").copied().unwrap_or(rate),
        latency_p99_seconds: shadow.get("latency_p99_seconds").copied().unwrap_or(0.0),
    })
}

fn to_tick_values(
    values: impl Iterator<Item = (&'static str, &'static str, traffic::Kind, u64)>,
) -> TickValues {
    values
        .map(|(name, _, _, value)| (name, value as f64))
        .collect()
}

/// An error and its sources, as one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
