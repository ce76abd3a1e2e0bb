//! Counters of the proxies in front of each asset, the mirroring proxy on the live side
//! and the fault-injecting proxy on the shadow side, as store series and as `umbra_`
//! Prometheus metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::fault::{MirrorStats, ProxyStats};

/// Counters of one asset's proxies at the latest tick.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TrafficSnapshot {
    /// The mirroring proxy in front of live, when one runs.
    pub mirror: Option<MirrorStats>,
    /// The shadows' fault proxies since Umbra started: totals carry over from one
    /// shadow's proxy to the next.
    pub proxy: Option<ProxyStats>,
}

/// Whether a value only grows (a counter) or goes up and down (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// A metric's name without `umbra_` (with `_total` for a counter), its help, its kind
/// and its value.
type Value = (&'static str, &'static str, Kind, u64);

/// Returns the mirroring proxy's values.
pub fn mirror_values(stats: &MirrorStats) -> [Value; 9] {
    use Kind::{Counter, Gauge};
    [
        (
            "mirror_requests_total",
            "Requests the mirroring proxy received from the live asset's clients",
            Counter,
            stats.requests_total,
        ),
        (
            "mirror_live_errors_total",
            "Requests (or TCP connections) that failed at live; HTTP clients got 502",
            Counter,
            stats.live_errors_total,
        ),
        (
            "mirror_copies_queued_total",
            "Request copies queued for the shadow",
            Counter,
            stats.copies_queued_total,
        ),
        (
            "mirror_copies_dropped_total",
            "Request copies dropped because the queue was full: the shadow lags",
            Counter,
            stats.copies_dropped_total,
        ),
        (
            "mirror_copies_skipped_total",
            "Requests not copied because of their method or size",
            Counter,
            stats.copies_skipped_total,
        ),
        (
            "mirror_copies_unrouted_total",
            "Requests not copied because the shadow was not at baseline (stress, restart, no shadow)",
            Counter,
            stats.copies_unrouted_total,
        ),
        (
            "mirror_shadow_responses_total",
            "Request copies the shadow answered, with any status",
            Counter,
            stats.shadow_responses_total,
        ),
        (
            "mirror_shadow_errors_total",
            "Request copies that failed or timed out at the shadow",
            Counter,
            stats.shadow_errors_total,
        ),
        (
            "mirror_queue_depth",
            "Request copies waiting for the shadow",
            Gauge,
            stats.queue_depth,
        ),
    ]
}

/// Returns the fault proxy's values.
pub fn proxy_values(stats: &ProxyStats) -> [Value; 8] {
    use Kind::{Counter, Gauge};
    [
        (
            "fault_proxy_connections_total",
            "Connections accepted by the fault proxies in front of the shadow",
            Counter,
            stats.connections_total,
        ),
        (
            "fault_proxy_connections_open",
            "Connections open through the shadow's fault proxy",
            Gauge,
            stats.connections_open,
        ),
        (
            "fault_proxy_connect_failures_total",
            "Connections closed because the shadow refused or did not answer the connect",
            Counter,
            stats.connect_failures_total,
        ),
        (
            "fault_proxy_upstream_bytes_total",
            "Bytes forwarded from clients to the shadow",
            Counter,
            stats.upstream_bytes_total,
        ),
        (
            "fault_proxy_downstream_bytes_total",
            "Bytes forwarded from the shadow to clients",
            Counter,
            stats.downstream_bytes_total,
        ),
        (
            "fault_proxy_faulted_directions_total",
            "Connection directions that started with a fault in force",
            Counter,
            stats.faulted_directions_total,
        ),
        (
            "fault_proxy_resets_total",
            "Connections reset by a reset fault",
            Counter,
            stats.resets_total,
        ),
        (
            "fault_proxy_timeouts_total",
            "Connections closed by a timeout fault",
            Counter,
            stats.timeouts_total,
        ),
    ]
}

/// Adds the counters of a retired proxy to `total`; open connections are not carried.
pub fn accumulate(total: &mut ProxyStats, retired: &ProxyStats) {
    total.connections_total += retired.connections_total;
    total.connect_failures_total += retired.connect_failures_total;
    total.upstream_bytes_total += retired.upstream_bytes_total;
    total.downstream_bytes_total += retired.downstream_bytes_total;
    total.faulted_directions_total += retired.faulted_directions_total;
    total.resets_total += retired.resets_total;
    total.timeouts_total += retired.timeouts_total;
}

/// One metric's help, kind and value per asset.
type Family = (&'static str, Kind, Vec<(String, u64)>);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AssetLabel {
    asset: String,
}

/// The latest snapshot of every asset, encoded on each scrape of `/metrics`.
#[derive(Debug, Default)]
pub struct TrafficCollector {
    assets: Mutex<BTreeMap<String, TrafficSnapshot>>,
}

impl TrafficCollector {
    /// Replaces the snapshot of `asset`.
    pub fn update(&self, asset: &str, snapshot: TrafficSnapshot) {
        self.lock().insert(asset.to_owned(), snapshot);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, TrafficSnapshot>> {
        self.assets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Collector for TrafficCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let assets = self.lock().clone();
        // One descriptor per metric, then one line per asset.
        let mut families: BTreeMap<&'static str, Family> = BTreeMap::new();
        for (asset, snapshot) in &assets {
            let mirror = snapshot.mirror.as_ref().map(mirror_values);
            let proxy = snapshot.proxy.as_ref().map(proxy_values);
            let values = mirror
                .iter()
                .flatten()
                .chain(proxy.iter().flatten())
                .copied();
            for (name, help, kind, value) in values {
                families
                    .entry(name)
                    .or_insert_with(|| (help, kind, Vec::new()))
                    .2
                    .push((asset.clone(), value));
            }
        }
        for (name, (help, kind, values)) in families {
            let metric_type = match kind {
                Kind::Counter => ConstCounter::new(0u64).metric_type(),
                Kind::Gauge => ConstGauge::new(0i64).metric_type(),
            };
            // The encoder adds `_total` to a counter's name.
            let name = name.strip_suffix("_total").unwrap_or(name);
            let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
            for (asset, value) in values {
                let label = AssetLabel { asset };
                let family = metric.encode_family(&label)?;
                match kind {
                    Kind::Counter => ConstCounter::new(value).encode(family)?,
                    Kind::Gauge => {
                        ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(family)?
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_reach_metrics_with_the_asset_label() {
        let telemetry = crate::engine::Telemetry::default();
        telemetry.traffic.update(
            "shop-api",
            TrafficSnapshot {
                mirror: Some(MirrorStats {
                    copies_dropped_total: 7,
                    queue_depth: 3,
                    ..MirrorStats::default()
                }),
                proxy: Some(ProxyStats {
                    connections_total: 2,
                    ..ProxyStats::default()
                }),
            },
        );
        let text = telemetry.encode();
        for line in [
            "# TYPE umbra_mirror_copies_dropped counter",
            "umbra_mirror_copies_dropped_total{asset=\"shop-api\"} 7",
            "# TYPE umbra_mirror_queue_depth gauge",
            "umbra_mirror_queue_depth{asset=\"shop-api\"} 3",
            "umbra_fault_proxy_connections_total{asset=\"shop-api\"} 2",
            "umbra_ticks_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "`{line}` missing:\n{text}");
        }
    }

    #[test]
    fn retired_proxies_carry_their_totals() {
        let mut total = ProxyStats {
            connections_total: 1,
            connections_open: 1,
            ..ProxyStats::default()
        };
        accumulate(
            &mut total,
            &ProxyStats {
                connections_total: 4,
                connections_open: 2,
                resets_total: 1,
                ..ProxyStats::default()
            },
        );
        assert_eq!(
            (
                total.connections_total,
                total.connections_open,
                total.resets_total
            ),
            (5, 1, 1)
        );
    }
}
