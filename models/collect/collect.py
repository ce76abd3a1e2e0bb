"""Collect failure-model training data from real runs of Umbra against the demo service.

Each run starts `umbra run` with eight assets, each a version of the demo service
(`versions/*.toml`) with its own capacity: two that hold every profile and six that fail
at different intensities (`fail-400` holds in the runs whose top rate stays below its
capacity). Simulated users send the run's baseline rate to every live
instance with the demo service's `load` example. The sequencer `sequencer.rhai` drives each
shadow through the run's ramping profiles, in order, until it fails or every profile has
passed. The engine records each tick's features and each shadow failure (`[model] enabled`).
After the last profile the run idles for one horizon, so the outcome of every recorded
tick is known, then stops the engine and writes `umbra model export-dataset` output.

Everything listens on 127.0.0.1. Usage, from the repository root after
`cargo build --release -p umbra-host --bin umbra -p umbra-demo-service --bins --examples`:

    python3 models/collect/collect.py run --all     # about 7 minutes per run
    python3 models/collect/collect.py merge         # writes models/data/demo-runs.csv.gz

`--target DIR` names cargo's target directory (default `$CARGO_TARGET_DIR` or `target`).
Only the Python standard library is used, so no virtual environment is needed.
"""

import argparse
import csv
import gzip
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
REPOSITORY = HERE.parent.parent
OUTPUT = HERE / "out"
DATA = REPOSITORY / "models" / "data"

HORIZON_SECONDS = 60
TICK_MS = 1000

# Versions in `versions/`, one asset each. The order fixes the assets' live ports.
VERSIONS = ["hold-cached", "hold-wide", "fail-60", "fail-100", "fail-160", "fail-240", "fail-400", "slow-320"]

# Each run is a baseline rate and a sequence of profiles. `peak` profiles ramp from the
# baseline to `multiple` times it over `ramp_ms` and hold for `hold_ms`. A `latency`
# entry is a failure profile that adds network latency through the shadow's fault proxy.
RUNS = {
    "gentle": {"baseline_rps": 20, "ramp_ms": 30000, "hold_ms": 10000, "profiles": [2, 4, 8, 12, 16]},
    "steep": {"baseline_rps": 30, "ramp_ms": 8000, "hold_ms": 15000, "profiles": [2, 4, 8, 12, 16]},
    "mixed": {"baseline_rps": 25, "ramp_ms": 20000, "hold_ms": 10000, "profiles": [3, "latency", 6, 10, 14]},
    "late": {"baseline_rps": 15, "ramp_ms": 25000, "hold_ms": 15000, "profiles": [4, "latency", 8, 16, 24]},
}

# Runs whose episodes form the held-out evaluation split; the others train the model.
TEST_RUNS = ["late"]

# Maximum time a run may take before the script gives up on it.
RUN_TIMEOUT_SECONDS = 900


def profile_toml(run):
    lines = ['[[profile]]\nname = "normal"\nkind = "normal"\n']
    for entry in run["profiles"]:
        if entry == "latency":
            lines.append(
                '[[profile]]\nname = "latency-150ms"\nkind = "failure"\nscenario = "slow network"\n'
                "multiple = 1\nhold_ms = 20000\n"
                'network = { rules = [{ direction = "downstream", kind = "latency", latency_ms = 150, jitter_ms = 50 }] }\n'
            )
        else:
            lines.append(
                f'[[profile]]\nname = "ramp-x{entry}"\nkind = "peak"\nmultiple = {entry}\n'
                f'ramp_ms = {run["ramp_ms"]}\nhold_ms = {run["hold_ms"]}\n'
            )
    return "\n".join(lines)


def engine_toml(name, index, run, work_dir):
    api_port = api_port_of(index)
    paths = ", ".join(f'"/api/items/{i}"' for i in range(10))
    text = f"""# Written by models/collect/collect.py for the run `{name}`.
[engine]
tick_ms = {TICK_MS}
window_ticks = 10
calibration_windows = 1
control_shadow = false
work_dir = "{work_dir}"

[api]
listen = "127.0.0.1:{api_port}"

[policies]
sequencer = "{HERE / 'sequencer.rhai'}"

[model]
enabled = true
"""
    for position, version in enumerate(VERSIONS):
        text += f"""
[[service]]
name = "{version}"

[[asset]]
name = "{version}"
service = "{version}"
kind = "process"
command = ["umbra-demo-service", "--config", "{{config}}", "--port", "{{port}}", "--data-dir", "{{data_dir}}"]
version = "{version}"
config = "{HERE / 'versions' / (version + '.toml')}"
port = {live_port_of(index, position)}
metrics = {{ requests = "demo_requests_total", latency = "demo_request_duration_seconds" }}
slo = {{ latency_p99_ms = 250, error_rate = 0.01 }}
load = {{ paths = [{paths}], baseline_rps = {run["baseline_rps"]}, max_connections = 256 }}
"""
    return text + "\n" + profile_toml(run)


def api_port_of(index):
    return 19090 + index


def live_port_of(index, position):
    return 19100 + 20 * index + position


def stress_profile_count(run):
    return len(run["profiles"])


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def wait_for_api(api, engine, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if engine.poll() is not None:
            raise SystemExit(f"umbra run exited with status {engine.returncode}: see its log")
        try:
            return get_json(f"{api}/v1/status")
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)
    raise SystemExit(f"the engine's API at {api} did not respond within {seconds} s")


def start_users(load_bin, port, rate, log):
    return subprocess.Popen(
        [str(load_bin), "--port", str(port), "--rate", str(rate), "--duration-seconds", "600", "--key-space", "10"],
        stdout=log,
        stderr=log,
    )


def outcome_of(events, run):
    """Return, per asset, `failed`, `held` (every profile passed) or None (still running)."""
    outcomes = {version: None for version in VERSIONS}
    passed = {version: 0 for version in VERSIONS}
    failures = {}
    for event in events:
        asset = event.get("asset")
        if asset not in outcomes or event.get("role", "shadow") != "shadow":
            continue
        if event["type"] == "shadow_failed" and asset not in failures:
            failures[asset] = {"ts_ms": event["ts_ms"], "profile": event.get("profile"), "reason": event["reason"]}
            outcomes[asset] = "failed"
        elif event["type"] == "profile_passed" and outcomes[asset] is None:
            passed[asset] += 1
            if passed[asset] >= stress_profile_count(run):
                outcomes[asset] = "held"
    return outcomes, failures


def run_one(name, index, args):
    run = RUNS[name]
    target = pathlib.Path(args.target).resolve()
    umbra = target / "release" / "umbra"
    load_bin = target / "release" / "examples" / "load"
    for binary in [umbra, load_bin, target / "release" / "umbra-demo-service"]:
        if not binary.exists():
            raise SystemExit(f"missing `{binary}`: build it with `cargo build --release -p umbra-host --bin umbra -p umbra-demo-service --bins --examples`")

    work = OUTPUT / name
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    config = work / "umbra.toml"
    config.write_text(engine_toml(name, index, run, work / "work"))
    api = f"http://127.0.0.1:{api_port_of(index)}"

    print(f"[{name}] starting the engine ({api})", flush=True)
    log = open(work / "umbra.log", "wb")
    users_log = open(work / "users.log", "wb")
    started_ms = int(time.time() * 1000)
    engine = subprocess.Popen([str(umbra), "run", "--config", str(config)], stdout=log, stderr=log)
    users = []
    try:
        wait_for_api(api, engine)
        users = [start_users(load_bin, live_port_of(index, p), run["baseline_rps"], users_log) for p in range(len(VERSIONS))]
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while True:
            if engine.poll() is not None:
                raise SystemExit(f"[{name}] umbra run exited with status {engine.returncode}: see {work / 'umbra.log'}")
            events = get_json(f"{api}/v1/events?since={started_ms}")
            outcomes, failures = outcome_of(events, run)
            if all(outcomes.values()):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"[{name}] timed out after {RUN_TIMEOUT_SECONDS} s with outcomes {outcomes}")
            for position, user in enumerate(users):
                if user.poll() is not None:
                    users[position] = start_users(load_bin, live_port_of(index, position), run["baseline_rps"], users_log)
            time.sleep(2)
        print(f"[{name}] outcomes: {outcomes}; idling {HORIZON_SECONDS + 5} s so every tick's outcome is known", flush=True)
        time.sleep(HORIZON_SECONDS + 5)
        ended_ms = int(time.time() * 1000)
        events = get_json(f"{api}/v1/events?since={started_ms}")
    finally:
        for user in users:
            if user.poll() is None:
                user.terminate()
        if engine.poll() is None:
            engine.send_signal(signal.SIGTERM)
            engine.wait(timeout=60)
    (work / "events.json").write_text(json.dumps(events, indent=1))
    summary = {"run": name, "started_ms": started_ms, "ended_ms": ended_ms, "settings": run, "outcomes": outcomes, "failures": failures}
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    export(umbra, work, summary)


def export(umbra, work, summary):
    """Write the run's recorded ticks with `umbra model export-dataset`."""
    dataset = work / "dataset.csv"
    subprocess.run(
        [str(umbra), "model", "--store", str(work / "work" / "store"), "export-dataset",
         "--since", str(summary["started_ms"]), "--until", str(summary["ended_ms"]),
         "--horizon-seconds", str(HORIZON_SECONDS), "--output", str(dataset)],
        check=True,
    )
    print(f"[{summary['run']}] wrote {dataset}", flush=True)


def merge():
    """Combine every run's export into one CSV, with an episode per run and asset."""
    rows = []
    summaries = []
    header = None
    for name in RUNS:
        work = OUTPUT / name
        if not (work / "dataset.csv").exists():
            raise SystemExit(f"no data for the run `{name}`: run `collect.py run {name}` first")
        summary = json.loads((work / "summary.json").read_text())
        summaries.append(summary)
        with open(work / "dataset.csv", newline="") as source:
            reader = csv.DictReader(source)
            header = reader.fieldnames
            for row in reader:
                failure = summary["failures"].get(row["asset"])
                # A failed shadow ends its episode: later ticks describe a stopped shadow.
                if failure and int(row["timestamp_ms"]) >= failure["ts_ms"]:
                    continue
                row["run"] = name
                row["split"] = "test" if name in TEST_RUNS else "train"
                row["episode"] = f"{name}/{row['asset']}"
                row["seconds"] = (int(row["timestamp_ms"]) - summary["started_ms"]) / 1000
                row["failed_at_seconds"] = "" if not failure else (failure["ts_ms"] - summary["started_ms"]) / 1000
                rows.append(row)
    features = [column for column in header if column not in ("asset", "timestamp_ms", "label", "failed_at_ms")]
    columns = ["split", "run", "episode", "asset", "seconds"] + features + ["label", "failed_at_seconds"]
    DATA.mkdir(exist_ok=True)
    with gzip.open(DATA / "demo-runs.csv.gz", "wt", newline="") as sink:
        writer = csv.DictWriter(sink, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            for feature in features:
                row[feature] = f"{float(row[feature]):.6g}"
            writer.writerow(row)
    (DATA / "demo-runs.json").write_text(json.dumps(summaries, indent=2) + "\n")
    positives = sum(row["label"] == "1" for row in rows)
    print(f"wrote {len(rows)} rows ({positives} labelled 1) to {DATA / 'demo-runs.csv.gz'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the named runs, one after another")
    run.add_argument("runs", nargs="*", help=f"runs to collect: {', '.join(RUNS)}")
    run.add_argument("--all", action="store_true", help="collect every run")
    run.add_argument("--target", default=os.environ.get("CARGO_TARGET_DIR", str(REPOSITORY / "target")))
    commands.add_parser("merge", help="combine the runs into models/data/demo-runs.csv.gz")
    args = parser.parse_args()

    if args.command == "merge":
        merge()
        return
    names = list(RUNS) if args.all else args.runs
    if not names:
        parser.error("name the runs to collect, or pass --all")
    for name in names:
        if name not in RUNS:
            parser.error(f"unknown run `{name}`: expected one of {', '.join(RUNS)}")
    for name in names:
        run_one(name, list(RUNS).index(name), args)


if __name__ == "__main__":
    sys.exit(main())
