"""The host's feature set (host/src/model/features.rs): names in input order, and its version."""

FEATURES_VERSION = 1
FEATURE_NAMES = [
    "drift_score",
    "latency_p50_change",
    "latency_p99_change",
    "error_rate_change",
    "throughput_change",
    "cpu_change",
    "rss_change",
    "fds_change",
    "threads_change",
    "utilisation",
    "latency_p99_slo_ratio",
    "error_rate_slo_ratio",
    "throughput_plan_ratio",
    "profile_intensity",
    "stress_seconds",
    "latency_p99_slo_ratio_slope",
    "error_rate_slo_ratio_slope",
]

# A tick's label is 1 when the shadow fails within this many seconds after it.
HORIZON_SECONDS = 60.0
