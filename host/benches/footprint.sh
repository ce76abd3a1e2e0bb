#!/usr/bin/env bash
# Footprint of the release `umbra` binary: stripped size, idle RSS with the
# default policy loaded, and the time from exec to the first remediation
# decision with one demo-service asset.
#
#   cargo build --release && host/benches/footprint.sh
#
# Uses loopback ports chosen by the kernel and a temporary directory, and
# stops every process it starts.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=${CARGO_TARGET_DIR:-$repo/target}/release
dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 1
    rm -rf "$dir"
}
trap cleanup EXIT

for program in umbra umbra-demo-service; do
    [ -x "$bin/$program" ] || { echo "missing $bin/$program: run cargo build --release" >&2; exit 1; }
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "binary size      $(stat -c %s "$bin/umbra") bytes ($(du -h "$bin/umbra" | cut -f1)), stripped by the release profile"

# Idle: one service, no assets, the embedded default policy and thresholds.
api=$(free_port)
cat > "$dir/idle.toml" <<TOML
[engine]
work_dir = "$dir/idle"
[api]
listen = "127.0.0.1:$api"
[[service]]
name = "idle"
TOML
"$bin/umbra" run --config "$dir/idle.toml" >/dev/null 2>&1 &
pids+=($!)
sleep 10
echo "idle RSS         $(awk '/VmRSS/ {print $2, $3}' /proc/${pids[0]}/status) after 10 s (peak $(awk '/VmHWM/ {print $2, $3}' /proc/${pids[0]}/status))"

# First decision: one asset, the demo service as live and shadow.
api=$(free_port)
live=$(free_port)
cp "$repo/examples/demo-service/configs/v1.toml" "$dir/v1.toml"
cat > "$dir/one.toml" <<TOML
[engine]
work_dir = "$dir/one"
[api]
listen = "127.0.0.1:$api"
[[service]]
name = "shop"
[[asset]]
name = "shop-api"
service = "shop"
kind = "process"
command = ["$bin/umbra-demo-service", "--config", "{config}", "--port", "{port}", "--data-dir", "{data_dir}"]
version = "v1"
config = "$dir/v1.toml"
port = $live
metrics = { requests = "demo_requests_total", latency = "demo_request_duration_seconds" }
slo = { latency_p99_ms = 250, error_rate = 0.01 }
load = { paths = ["/api/items/1"] }
TOML
start=$(date +%s%N)
"$bin/umbra" run --config "$dir/one.toml" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$api/v1/events" 2>/dev/null | grep -q '"type":"decision"'; then
        echo "first decision   $(( ($(date +%s%N) - start) / 1000000 )) ms after exec (includes starting live and shadow)"
        echo "RSS with 1 asset $(awk '/VmRSS/ {print $2, $3}' /proc/${pids[1]}/status)"
        exit 0
    fi
    sleep 0.02
done
echo "no decision within 6 s" >&2
exit 1
