"""Score `umbra replay` on NAB realKnownCause with NAB's scoring rules.

For every series in NAB_DIR/data/realKnownCause the script runs
`umbra replay --input FILE --predictor P`. It takes three per-row anomaly scores from the
output: the twin's drift score, the failure probability, and 1 − confidence. Each is scored
with NAB's rules as NAB's `nab/sweeper.py` implements them:

- the first 15 % of each file (at most 750 rows) is probationary and not scored;
- a detection inside a label window scores tpWeight × a scaled sigmoid of its position,
  and only the best (earliest) detection of each window counts;
- a window without a detection scores −fnWeight;
- a detection outside every window scores fpWeight × the scaled sigmoid of its distance
  past the previous window (about −fpWeight far away from windows);
- the corpus total is normalised to 100 for the perfect detector and 0 for the detector
  that never fires, and the threshold is chosen per profile to maximise it, as NAB does.

Usage: python nab.py --umbra target/debug/umbra --nab ../../../shared/data/nab
"""

import argparse
import csv
import datetime
import json
import math
import pathlib
import subprocess
import tempfile

PROBATION_PERCENT = 0.15
SCORES = {
    "drift": lambda row: float(row["drift_score"]),
    "failure_probability": lambda row: float(row["failure_probability"]),
    "one_minus_confidence": lambda row: 1.0 - float(row["confidence"]),
}


def scaled_sigmoid(position):
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def parse_time(text):
    return datetime.datetime.fromisoformat(text.strip())


def sweep_scores(times, windows, cost):
    """Return, per row, (window index or None, weighted score if detected there)."""
    max_tp = scaled_sigmoid(-1.0)
    index_of = {t: i for i, t in enumerate(times)}
    bounds = []
    for start, end in windows:
        # Window limits are normally data timestamps. Otherwise take the nearest rows inside the window.
        left = index_of.get(start, next((i for i, t in enumerate(times) if t >= start), len(times) - 1))
        right = index_of.get(end, max((i for i, t in enumerate(times) if t <= end), default=0))
        bounds.append((left, right))
    rows = []
    previous_right = previous_width = None
    current = 0
    for i in range(len(times)):
        while current < len(bounds) and i > bounds[current][1]:
            previous_right = bounds[current][1]
            previous_width = bounds[current][1] - bounds[current][0] + 1
            current += 1
        if current < len(bounds) and bounds[current][0] <= i <= bounds[current][1]:
            left, right = bounds[current]
            width = right - left + 1
            position = -(right - i + 1) / width
            rows.append((current, scaled_sigmoid(position) * cost["tpWeight"] / max_tp))
        else:
            if previous_right is None:
                position = 3.0
            else:
                position = abs(previous_right - i) / max(previous_width - 1, 1)
            rows.append((None, scaled_sigmoid(position) * cost["fpWeight"]))
    return rows


def file_score(scores, sweep, threshold, cost, window_count):
    probation = min(math.floor(PROBATION_PERCENT * len(scores)), PROBATION_PERCENT * 5000)
    best = [None] * window_count
    false_positive = 0.0
    detections = 0
    for i, (score, (window, weighted)) in enumerate(zip(scores, sweep)):
        if i < probation or score < threshold:
            continue
        detections += 1
        if window is None:
            false_positive += weighted
        else:
            best[window] = weighted if best[window] is None else max(best[window], weighted)
    total = false_positive + sum(-cost["fnWeight"] if b is None else b for b in best)
    detected = sum(1 for b in best if b is not None)
    return total, detected, detections


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--umbra", required=True, help="path of the umbra binary")
    parser.add_argument("--nab", required=True, help="folder with data/, labels/ and profiles.json")
    parser.add_argument("--predictor", default="default", choices=["default", "rule-based"])
    args = parser.parse_args()
    nab = pathlib.Path(args.nab)
    windows = json.loads((nab / "labels" / "combined_windows_realKnownCause.json").read_text())
    profiles = json.loads((nab / "profiles.json").read_text())

    series = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in sorted(windows):
            path = nab / "data" / key
            out = pathlib.Path(tmp) / "replay.csv"
            subprocess.run([args.umbra, "replay", "--input", str(path), "--predictor", args.predictor, "--output", str(out)], check=True)
            with out.open() as f:
                rows = list(csv.DictReader(f))
            times = [parse_time(r["timestamp"]) for r in rows]
            limits = [(parse_time(a), parse_time(b)) for a, b in windows[key]]
            series[key] = (rows, times, limits)

    results = {"predictor": args.predictor, "files": len(series), "windows": sum(len(s[2]) for s in series.values()), "scores": {}}
    thresholds = [round(0.01 * k, 2) for k in range(1, 100)]
    for score_name, extract in SCORES.items():
        per_profile = {}
        for profile, body in profiles.items():
            cost = body["CostMatrix"]
            sweeps = {key: sweep_scores(times, limits, cost) for key, (rows, times, limits) in series.items()}
            values = {key: [extract(r) for r in rows] for key, (rows, _, _) in series.items()}
            window_total = sum(len(limits) for _, _, limits in series.values())
            perfect = cost["tpWeight"] * window_total
            null = -cost["fnWeight"] * window_total
            best = None
            for threshold in thresholds:
                raw = detected = detections = 0
                for key, (_, _, limits) in series.items():
                    total, hit, fired = file_score(values[key], sweeps[key], threshold, cost, len(limits))
                    raw += total
                    detected += hit
                    detections += fired
                normalised = 100.0 * (raw - null) / (perfect - null)
                if best is None or normalised > best["score"]:
                    best = {"score": round(normalised, 1), "threshold": threshold, "windows_detected": detected, "detections": detections}
            per_profile[profile] = best
        results["scores"][score_name] = per_profile
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
