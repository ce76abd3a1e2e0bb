"""Score `umbra replay` on JumpStarter Dataset2 (services 0-9): point-wise F1, event F1, delay.

Per service, every one of the 19 columns is replayed through `umbra replay --format columns`
over the train rows followed by the test rows, so each column's model twin learns on the
train split before it scores the test split. The anomaly score of a row is the largest
drift score over the columns. The alarm threshold is the 99.5th percentile of that score
over the train split: train rows carry no labels, and the threshold assumes at most 0.5 %
of them are anomalous.

Figures on the test split, per service and over all services:
- point-wise precision, recall and F1 over rows (no point adjustment);
- event F1: an anomaly segment (a run of label-1 rows) is detected when an alarm fires
  inside it, and an alarm run (consecutive alarm rows) is correct when it overlaps a
  segment. Event precision is correct alarm runs over all alarm runs, and event recall is
  detected segments over all segments;
- mean detection delay in minutes from a segment's first row to its first alarm (rows are
  5 minutes apart). A negative delay, an alarm before the segment, cannot occur because
  only alarms inside the segment count.

Usage: python jumpstarter.py --umbra target/debug/umbra --data ../../../shared/data/jumpstarter
"""

import argparse
import csv
import json
import pathlib
import subprocess
import tempfile

import numpy as np

COLUMNS = 19
STEP_MINUTES = 5
TRAIN_QUANTILE = 99.5


def runs(flags):
    """Return (start, end) index pairs of consecutive True values."""
    out = []
    start = None
    for i, flag in enumerate(flags):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            out.append((start, i - 1))
            start = None
    if start is not None:
        out.append((start, len(flags) - 1))
    return out


def f1(precision, recall):
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def score_service(umbra, data, service, tmp):
    train = (data / "dataset/Dataset2/train" / f"{service}.csv").read_text()
    test = (data / "dataset/Dataset2/test" / f"{service}.csv").read_text()
    labels = np.array([int(line.strip()) for line in (data / "dataset/Dataset2/test_label" / f"{service}.csv").read_text().splitlines() if line.strip()])
    combined = pathlib.Path(tmp) / "series.csv"
    combined.write_text(train.rstrip("\n") + "\n" + test)
    train_rows = len([line for line in train.splitlines() if line.strip()])

    drift = None
    for column in range(COLUMNS):
        out = pathlib.Path(tmp) / "replay.csv"
        subprocess.run([umbra, "replay", "--input", str(combined), "--format", "columns", "--column", str(column), "--predictor", "rule-based", "--output", str(out)], check=True)
        with out.open() as f:
            values = np.array([float(r["drift_score"]) for r in csv.DictReader(f)])
        drift = values if drift is None else np.maximum(drift, values)

    threshold = float(np.percentile(drift[:train_rows], TRAIN_QUANTILE))
    score = drift[train_rows:]
    alarms = score > threshold
    assert len(alarms) == len(labels), (service, len(alarms), len(labels))

    tp = int((alarms & (labels == 1)).sum())
    precision = tp / max(int(alarms.sum()), 1)
    recall = tp / max(int(labels.sum()), 1)
    segments = runs(labels == 1)
    alarm_runs = runs(alarms)
    detected = [s for s in segments if alarms[s[0] : s[1] + 1].any()]
    correct_runs = [r for r in alarm_runs if (labels[r[0] : r[1] + 1] == 1).any()]
    delays = [STEP_MINUTES * int(np.argmax(alarms[s[0] : s[1] + 1])) for s in detected]
    event_precision = len(correct_runs) / max(len(alarm_runs), 1)
    event_recall = len(detected) / max(len(segments), 1)
    return {
        "threshold": round(threshold, 4),
        "point_precision": round(precision, 4),
        "point_recall": round(recall, 4),
        "point_f1": round(f1(precision, recall), 4),
        "segments": len(segments),
        "segments_detected": len(detected),
        "alarm_runs": len(alarm_runs),
        "alarm_runs_in_segments": len(correct_runs),
        "event_f1": round(f1(event_precision, event_recall), 4),
        "mean_delay_minutes": round(float(np.mean(delays)), 1) if delays else None,
        "counts": (tp, int(alarms.sum()), int(labels.sum()), len(correct_runs), len(alarm_runs), len(detected), len(segments), delays),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--umbra", required=True, help="path of the umbra binary")
    parser.add_argument("--data", required=True, help="folder that contains dataset/Dataset2")
    args = parser.parse_args()
    data = pathlib.Path(args.data)
    services = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(10):
            services[f"service{k}"] = score_service(args.umbra, data, f"service{k}", tmp)

    tp = sum(s["counts"][0] for s in services.values())
    alarms = sum(s["counts"][1] for s in services.values())
    positives = sum(s["counts"][2] for s in services.values())
    correct = sum(s["counts"][3] for s in services.values())
    runs_total = sum(s["counts"][4] for s in services.values())
    detected = sum(s["counts"][5] for s in services.values())
    segments = sum(s["counts"][6] for s in services.values())
    delays = [d for s in services.values() for d in s["counts"][7]]
    precision = tp / max(alarms, 1)
    recall = tp / max(positives, 1)
    overall = {
        "point_precision": round(precision, 4),
        "point_recall": round(recall, 4),
        "point_f1": round(f1(precision, recall), 4),
        "segments_detected": f"{detected} of {segments}",
        "event_f1": round(f1(correct / max(runs_total, 1), detected / max(segments, 1)), 4),
        "mean_delay_minutes": round(float(np.mean(delays)), 1) if delays else None,
    }
    for s in services.values():
        s.pop("counts")
    print(json.dumps({"method": "max twin drift over 19 columns, threshold = train 99.5th percentile", "overall": overall, "services": services}, indent=2))


if __name__ == "__main__":
    main()
