"""Score failure probabilities on recorded shadow runs, and the host's rule-based estimate.

`evaluate` reports, at the alarm threshold 0.5:
- tick level: precision, recall and F1 against the label (failure within the horizon),
  and ROC AUC;
- episode level: a failing episode is detected when an alarm fires on one of its labelled
  ticks, which lie within the horizon before the failure. A healthy episode with any alarm
  counts as a false alarm. Lead time is the failure time minus the first such alarm.
"""

import numpy as np
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from features import HORIZON_SECONDS

THRESHOLD = 0.5


def rule_based_probability(frame):
    """Compute the host's rule-based estimate (host/src/model/rule.rs) with the same formula."""
    minutes = HORIZON_SECONDS / 60.0
    latency = frame["latency_p99_slo_ratio"] + np.maximum(frame["latency_p99_slo_ratio_slope"], 0.0) * minutes
    errors = frame["error_rate_slo_ratio"] + np.maximum(frame["error_rate_slo_ratio_slope"], 0.0) * minutes
    utilisation = frame["utilisation"] / 0.9
    pressure = np.clip(np.maximum.reduce([latency, errors, utilisation]), -1e3, 1e3)
    slo = 1.0 / (1.0 + np.exp(-4.0 * (pressure - 1.0)))
    drift = np.clip(frame["drift_score"], 0.0, 1.0)
    return (1.0 - (1.0 - slo) * (1.0 - 0.5 * drift)).to_numpy()


def evaluate(frame, probability):
    probability = np.asarray(probability, dtype=float)
    labels = frame["label"].to_numpy()
    alarms = probability >= THRESHOLD
    figures = {
        "threshold": THRESHOLD,
        "tick_precision": round(float(precision_score(labels, alarms, zero_division=0)), 4),
        "tick_recall": round(float(recall_score(labels, alarms, zero_division=0)), 4),
        "tick_f1": round(float(f1_score(labels, alarms, zero_division=0)), 4),
        "roc_auc": round(float(roc_auc_score(labels, probability)), 4),
    }

    detected = missed = false_alarms = healthy = 0
    leads = []
    work = frame.assign(alarm=alarms)
    for _, episode in work.groupby("episode"):
        failed_at = episode["failed_at_seconds"].iloc[0]
        if np.isnan(failed_at):
            healthy += 1
            false_alarms += int(episode["alarm"].any())
            continue
        warned = episode[(episode["label"] == 1) & episode["alarm"]]
        if len(warned) == 0:
            missed += 1
        else:
            detected += 1
            leads.append(float(failed_at - warned["seconds"].min()))
    figures.update(
        {
            "failing_episodes": detected + missed,
            "failing_episodes_detected": detected,
            "healthy_episodes": healthy,
            "healthy_episodes_with_false_alarm": false_alarms,
            "mean_lead_seconds": round(float(np.mean(leads)), 1) if leads else None,
        }
    )
    return figures
