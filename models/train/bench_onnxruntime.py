"""Inference latency of models/default.onnx in onnxruntime, the peer of host/benches/model.rs.

Same inputs as the Rust benchmark, same statistics (median and 90th percentile of 31
timed runs after one warm-up run), one thread (intra- and inter-op), batch of 1 and 1,000.
"""

import pathlib
import sys
import time

import numpy as np
import onnxruntime as ort

from simulate import FEATURE_NAMES

RUNS = 31
MODEL = pathlib.Path(__file__).resolve().parent.parent / "default.onnx"


def assets(count):
    rows = np.zeros((count, len(FEATURE_NAMES)), dtype=np.float32)
    load = (np.arange(count) % 100) / 100.0
    columns = {
        "drift_score": load / 2.0,
        "latency_p99_slo_ratio": 0.2 + 2.0 * load,
        "error_rate_slo_ratio": load,
        "utilisation": load,
        "throughput_plan_ratio": np.ones(count),
        "profile_intensity": 1.0 + 5.0 * load,
        "stress_seconds": 300.0 * load,
    }
    for name, values in columns.items():
        rows[:, FEATURE_NAMES.index(name)] = values
    return rows


def measure(iterations, call):
    for _ in range(iterations):
        call()
    timings = []
    for _ in range(RUNS):
        start = time.perf_counter()
        for _ in range(iterations):
            call()
        timings.append((time.perf_counter() - start) / iterations)
    timings.sort()
    return timings[RUNS // 2], timings[RUNS * 9 // 10]


def main():
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])
    for batch, iterations in [(1, 20000), (1000, 200)]:
        inputs = {"float_input": assets(batch)}
        median, p90 = measure(iterations, lambda: session.run(["probabilities"], inputs))
        print(
            f"{'onnxruntime ' + ort.__version__:<28} batch {batch:>5}: median {median * 1e6:>9.2f} µs/batch "
            f"{median * 1e6 / batch:>7.3f} µs/asset, p90 {p90 * 1e6:>9.2f} µs/batch"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
