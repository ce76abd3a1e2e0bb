#!/bin/sh
# Measure default-model inference latency in tract (host/benches/model.rs, release build)
# and in onnxruntime (bench_onnxruntime.py) in one run on the same machine.
# Usage: models/train/bench.sh [PYTHON]   (PYTHON defaults to python3 with requirements.txt installed)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${1:-python3}
cd "$here/../.."
uname -m
grep -m1 "model name" /proc/cpuinfo || true
cargo bench -p umbra-host --bench model
cd "$here" && "$python" bench_onnxruntime.py
