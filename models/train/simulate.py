"""Generate labelled shadow runs: per-tick features and whether the shadow failed soon after.

The simulated asset has the demo service's shape (examples/demo-service): a pool of
worker slots with a fixed service time, a bounded wait queue, and 503 for a request that
finds the queue full. Each episode runs a live copy at its baseline rate and a shadow of a
candidate version (sometimes a regression: fewer workers, slower work, a memory or file
descriptor leak), then drives the shadow with one load plan (normal, peak ramp, spike,
soak, or a fault) the way Umbra's sequencer does. Every tick produces the host's feature
row (host/src/model/features.rs, FEATURES_VERSION 1) computed from simulated window
summaries. The shadow *fails* when it breaches its SLO badly for 3 ticks in a row or
crashes (memory or file descriptor limit); the label of a tick is 1 when a failure starts
within the horizon after it.

This is a simulator, not recorded runs of Umbra; the shipped model is trained on recorded
runs (models/collect/). The simulated files in models/data/simulated/ remain as the fixture
of host/tests/model/features.rs, which checks that the host computes the slope features
the way this Python code does. Re-run with
`python simulate.py --seed 2 --episodes 120 --out ../data/simulated/test.csv`.
"""

import argparse
import csv
import math

import numpy as np

from features import FEATURE_NAMES, FEATURES_VERSION, HORIZON_SECONDS  # noqa: F401

TICK_SECONDS = 5.0
TREND_TICKS = 10
SLO_LATENCY_P99 = 0.25  # seconds
SLO_ERROR_RATE = 0.01
FAIL_RATIO = 3.0  # an SLO ratio above this for FAIL_TICKS ticks is a failure
FAIL_TICKS = 3
PLANS = ["normal", "peak", "spike", "soak", "fault_latency", "fault_errors", "fault_fds"]


class Asset:
    """One copy of the service: worker pool, queue, memory and descriptors."""

    def __init__(self, rng, workers, work_s, queue_limit, leak_mb_s=0.0, fd_leak_s=0.0):
        self.rng = rng
        self.workers = workers
        self.work_s = work_s
        self.queue_limit = queue_limit
        self.leak_mb_s = leak_mb_s
        self.fd_leak_s = fd_leak_s
        self.backlog = 0.0
        self.rss_mb = 40.0
        self.fds = 30.0
        self.extra_latency_s = 0.0
        self.error_injection = 0.0

    def step(self, rate):
        """Advance one tick at `rate` requests per second; return the tick's summary."""
        capacity = self.workers / self.work_s
        offered = rate * TICK_SECONDS + self.backlog
        served = min(offered, capacity * TICK_SECONDS)
        backlog = offered - served
        rejected = max(0.0, backlog - self.queue_limit)
        self.backlog = backlog - rejected
        rho = min(rate / capacity, 0.999) if capacity > 0 else 0.999
        wait = self.backlog / capacity if capacity > 0 else 10.0
        # M/M/c-like waiting grows as 1/(1-rho); p99 is a few times the median.
        p50 = self.work_s * (1.0 + 0.5 * rho / (1.0 - rho) / self.workers) + wait / 2
        p50 += self.extra_latency_s
        p99 = p50 * (2.5 + 2.0 * rho) + wait
        noise = self.rng.lognormal(0.0, 0.05)
        errors = rejected + served * self.error_injection
        requests = max(rate * TICK_SECONDS, 1e-9)
        self.rss_mb += self.leak_mb_s * TICK_SECONDS + 0.02 * self.backlog
        self.fds += self.fd_leak_s * TICK_SECONDS
        return {
            "latency_p50": p50 * noise,
            "latency_p99": p99 * noise * self.rng.lognormal(0.0, 0.08),
            "error_rate": min(errors / requests, 1.0),
            "throughput": served / TICK_SECONDS,
            "cpu": min(rate / capacity, 1.0) * self.rng.lognormal(0.0, 0.05),
            "rss": self.rss_mb * self.rng.lognormal(0.0, 0.01),
            "fds": self.fds + 0.1 * self.backlog,
            "threads": 8 + min(self.workers, 64) / 8,
        }


def relative_change(live, shadow):
    if live == 0 or not math.isfinite(live) or not math.isfinite(shadow):
        return 0.0
    return (shadow - live) / abs(live)


def slope_per_minute(points):
    if len(points) < 2:
        return 0.0
    t = np.array([p[0] for p in points])
    v = np.array([p[1] for p in points])
    dt = t - t.mean()
    var = float((dt * dt).sum())
    return 0.0 if var == 0 else float((dt * (v - v.mean())).sum() / var * 60.0)


def plan_intensity(plan, seconds, length, peak):
    """Offered rate as a multiple of the baseline rate, `seconds` into the plan."""
    if plan == "peak":
        return 1.0 + (peak - 1.0) * min(seconds / (0.6 * length), 1.0)
    if plan == "spike":
        return peak if length * 0.3 <= seconds < length * 0.5 else 1.0
    if plan == "soak":
        return 1.5
    return 1.0


def run_episode(rng, episode):
    """Simulate one shadow run; return its rows (features, failure time)."""
    baseline_rate = float(rng.uniform(20, 120))
    # Services are sized for their load: capacity is 1.5 to 8 times the baseline rate.
    headroom = float(rng.uniform(1.5, 8.0))
    live_work = float(rng.uniform(0.005, 0.05))
    live_workers = max(1, round(baseline_rate * headroom * live_work))
    live = Asset(rng, live_workers, live_work, 256)

    regression = rng.random() < 0.5
    workers = live_workers
    work = live_work
    leak = fd_leak = 0.0
    if regression:
        kind = rng.choice(["workers", "slow", "leak", "fds"])
        if kind == "workers":
            workers = max(1, int(live_workers * rng.uniform(0.2, 0.7)))
        elif kind == "slow":
            work = live_work * rng.uniform(1.5, 6.0)
        elif kind == "leak":
            leak = float(rng.uniform(0.2, 2.0))
        else:
            fd_leak = float(rng.uniform(0.5, 4.0))
    shadow = Asset(rng, workers, work, int(rng.choice([16, 64, 256])), leak, fd_leak)
    rss_limit = 40.0 + float(rng.uniform(200, 800))
    fd_limit = 1024.0

    plan = str(rng.choice(PLANS))
    plan_length = float(rng.uniform(120, 600))
    peak = float(rng.uniform(1.5, 12.0))
    warmup = float(rng.uniform(30, 120))
    total = warmup + plan_length + 60.0

    rows = []
    trend = []
    breach_ticks = 0
    failed_at = None
    drift_score = 0.0
    t = 0.0
    while t < total:
        in_plan = warmup <= t < warmup + plan_length
        since = t - warmup
        intensity = plan_intensity(plan, since, plan_length, peak) if in_plan else 1.0
        if in_plan and plan == "fault_latency":
            shadow.extra_latency_s = 0.05 * min(since / 60.0, 4.0)
        elif in_plan and plan == "fault_errors":
            shadow.error_injection = min(0.002 * since / 10.0, 0.5)
        elif in_plan and plan == "fault_fds":
            shadow.fd_leak_s = max(fd_leak, 3.0)
        else:
            shadow.extra_latency_s = 0.0
            shadow.error_injection = 0.0
            shadow.fd_leak_s = fd_leak
        live_summary = live.step(baseline_rate)
        shadow_summary = shadow.step(baseline_rate * intensity)

        stressed = in_plan and plan != "normal"
        if not stressed:
            # The drift policy compares at baseline; a score from the p99 and error changes.
            lat = relative_change(live_summary["latency_p99"], shadow_summary["latency_p99"])
            err = shadow_summary["error_rate"] - live_summary["error_rate"]
            drift_score = float(min(1.0, max(0.0, 0.5 * max(lat - 0.1, 0.0) + 20.0 * max(err, 0.0))))
        features = {"drift_score": drift_score}
        for metric in ["latency_p50", "latency_p99", "error_rate", "throughput", "cpu", "rss", "fds", "threads"]:
            features[f"{metric}_change"] = relative_change(live_summary[metric], shadow_summary[metric])
        features["utilisation"] = min(shadow_summary["cpu"], 1.0)
        features["latency_p99_slo_ratio"] = shadow_summary["latency_p99"] / SLO_LATENCY_P99
        features["error_rate_slo_ratio"] = shadow_summary["error_rate"] / SLO_ERROR_RATE
        features["throughput_plan_ratio"] = shadow_summary["throughput"] / (baseline_rate * intensity)
        features["profile_intensity"] = intensity
        features["stress_seconds"] = since if stressed else 0.0
        trend.append((t, features["latency_p99_slo_ratio"], features["error_rate_slo_ratio"]))
        trend = trend[-TREND_TICKS:]
        features["latency_p99_slo_ratio_slope"] = slope_per_minute([(p[0], p[1]) for p in trend])
        features["error_rate_slo_ratio_slope"] = slope_per_minute([(p[0], p[2]) for p in trend])
        rows.append((t, features))

        bad = max(features["latency_p99_slo_ratio"], features["error_rate_slo_ratio"]) > FAIL_RATIO
        breach_ticks = breach_ticks + 1 if bad else 0
        crashed = shadow.rss_mb > rss_limit or shadow.fds > fd_limit
        if breach_ticks >= FAIL_TICKS or crashed:
            failed_at = t
            break
        t += TICK_SECONDS

    out = []
    for t, features in rows:
        label = int(failed_at is not None and failed_at - t <= HORIZON_SECONDS)
        out.append((episode, t, plan, features, label, failed_at))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--episodes", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    with open(args.out, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["episode", "seconds", "plan", *FEATURE_NAMES, "label", "failed_at_seconds"])
        for episode in range(args.episodes):
            for ep, t, plan, features, label, failed_at in run_episode(rng, episode):
                values = [f"{features[name]:.5g}" for name in FEATURE_NAMES]
                failed = "" if failed_at is None else f"{failed_at:g}"
                writer.writerow([ep, f"{t:g}", plan, *values, label, failed])


if __name__ == "__main__":
    main()
