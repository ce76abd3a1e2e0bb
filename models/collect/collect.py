"""Collect failure-model training data from real runs of Umbra against the demo service
and against PostgreSQL.

A demo-service run starts `umbra run` with eight assets, each a version of the demo
service (`versions/*.toml`) with its own capacity: two that pass every profile and six
that fail at different intensities (`fail-400` passes in the runs whose top rate stays
below its capacity). Simulated users send the run's baseline rate to every live
instance with the demo service's `load` example.

A PostgreSQL run (`pg-*`) starts one live cluster per asset with `initdb` and `pg_ctl`,
as the `postgres` user when the script runs as root, and `kind = "postgres"` assets that
deploy `versions/pg-*.conf` to them: settings that differ in `max_connections`, so the
clones run out of connections at different rates, and one that holds. `pgbench` plays the
users of each live cluster at the run's baseline rate. Umbra clones each cluster with
`pg_basebackup` and drives the clone with its SQL load; each transaction holds its
connection for 100 ms, so the connections a rate needs are a tenth of it. The sequencer `sequencer.rhai` drives each
shadow through the run's ramping profiles, in order, until it fails or every profile has
passed. The engine records each tick's features and each shadow failure (`[model] enabled`).
After the last profile the run idles for one horizon, so the outcome of every recorded
tick is known, then stops the engine and writes `umbra model export-dataset` output.

Everything listens on 127.0.0.1. Usage, from the repository root after
`cargo build --release -p umbra-host --bin umbra -p umbra-demo-service --bins --examples`
(and `.ci/install-postgres` for the PostgreSQL runs):

    python3 models/collect/collect.py run --all     # about 7 minutes per run
    python3 models/collect/collect.py run pg-gentle # one run
    python3 models/collect/collect.py merge         # writes models/data/demo-runs.csv.gz

`merge` takes each run from its fresh export in `models/collect/out/`, and a run that was
not collected again from the committed `models/data/demo-runs.csv.gz`.

`--target DIR` names cargo's target directory (default `$CARGO_TARGET_DIR` or `target`).
Only the Python standard library is used, so no virtual environment is needed.
"""

import argparse
import csv
import gzip
import json
import os
import pathlib
import shutil
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

# PostgreSQL versions in `versions/`, one asset and live cluster each. The clone of a
# version fails once the load needs more connections than its `max_connections`, less
# the connections Umbra's own statistics reads use.
PG_VERSIONS = ["pg-hold", "pg-40", "pg-24", "pg-14"]

# PostgreSQL runs: the same shape as the demo-service runs, rates in transactions per
# second.
PG_RUNS = {
    "pg-gentle": {"baseline_rps": 20, "ramp_ms": 25000, "hold_ms": 10000, "profiles": [2, 4, 8, 12, 16]},
    "pg-steep": {"baseline_rps": 25, "ramp_ms": 8000, "hold_ms": 15000, "profiles": [3, 6, 10, 14, 20]},
}
RUNS.update(PG_RUNS)

# Runs whose episodes form the held-out evaluation split; the others train the model.
TEST_RUNS = ["late", "pg-steep"]

# Seconds each transaction of the PostgreSQL load and of the users keeps its connection
# busy, after writing a row.
PG_SLEEP_SECONDS = 0.1

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


def engine_header(name, index, work_dir):
    """Return the engine, API, policy and model tables that every run shares."""
    return f"""# Written by models/collect/collect.py for the run `{name}`.
[engine]
tick_ms = {TICK_MS}
window_ticks = 10
calibration_windows = 1
control_shadow = false
work_dir = "{work_dir}"

[api]
listen = "127.0.0.1:{api_port_of(index)}"

[policies]
sequencer = "{HERE / 'sequencer.rhai'}"

[model]
enabled = true
"""


def engine_toml(name, index, run, work_dir):
    paths = ", ".join(f'"/api/items/{i}"' for i in range(10))
    text = engine_header(name, index, work_dir)
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


def pg_engine_toml(name, index, run, work_dir, clusters):
    text = engine_header(name, index, work_dir)
    for position, version in enumerate(PG_VERSIONS):
        cluster = clusters[version]
        shadow_port = pg_shadow_port_of(index, position)
        text += f"""
[[service]]
name = "{version}"

[[asset]]
name = "{version}"
service = "{version}"
kind = "postgres"
version = "{version}"
config = "{HERE / 'versions' / (version + '.conf')}"
slo = {{ latency_p99_ms = 1000, error_rate = 0.01 }}
load = {{ baseline_rps = {run["baseline_rps"]}, max_connections = 256, timeout_ms = 5000 }}

[asset.postgres]
live = {{ host = "127.0.0.1", port = {cluster["port"]}, user = "postgres", database = "postgres", data_dir = "{cluster["data_dir"]}" }}
shadow = {{ work_dir = "{cluster["shadows"]}", ports = [{shadow_port}, {shadow_port + 9}] }}

[asset.postgres.workload]
type = "custom"
setup = ["CREATE TABLE umbra_load_events (id bigserial PRIMARY KEY, at timestamptz NOT NULL)"]
transactions = [
  {{ class = "order", weight = 1, statements = [
    {{ sql = "INSERT INTO umbra_load_events (at) VALUES (now())" }},
    {{ sql = "SELECT pg_sleep({PG_SLEEP_SECONDS})" }},
  ] }},
]
"""
    return text + "\n" + profile_toml(run)


def pg_live_port_of(index, position):
    return 19300 + 10 * index + position


def pg_shadow_port_of(index, position):
    return 19400 + 40 * index + 10 * position


def as_server_user(command):
    """`command` run as the `postgres` user when this script runs as root: the server
    refuses to run as root."""
    return ["runuser", "-u", "postgres", "--"] + command if os.geteuid() == 0 else command


def pg_program(name):
    """Path of a PostgreSQL server program: Debian keeps them out of PATH."""
    for candidate in sorted(pathlib.Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    if shutil.which(name):
        return shutil.which(name)
    raise SystemExit(f"`{name}` not found under /usr/lib/postgresql: run .ci/install-postgres first")


def start_clusters(index, root):
    """Create and start one live cluster per PostgreSQL version under `root`, each with
    the table its users write to."""
    if os.geteuid() == 0:
        subprocess.run(["chown", "postgres:postgres", str(root)], check=True)
    clusters = {}
    for position, version in enumerate(PG_VERSIONS):
        data_dir = root / version
        shadows = root / f"{version}-shadows"
        port = pg_live_port_of(index, position)
        subprocess.run(
            as_server_user([pg_program("initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust",
                            "--no-sync", "--encoding=UTF8", "--locale=C"]),
            check=True, stdout=subprocess.DEVNULL,
        )
        subprocess.run(as_server_user(["mkdir", "-p", str(shadows)]), check=True)
        options = f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root} -c fsync=off"
        subprocess.run(
            as_server_user([pg_program("pg_ctl"), "start", "-w", "-t", "60", "-D", str(data_dir),
                            "-l", str(root / f"{version}.log"), "-o", options]),
            check=True, stdout=subprocess.DEVNULL,
        )
        clusters[version] = {"port": port, "data_dir": data_dir, "shadows": shadows}
        subprocess.run(
            [pg_program("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-q", "-c",
             "CREATE TABLE orders (id bigserial PRIMARY KEY, amount int NOT NULL)"],
            check=True,
        )
    return clusters


def stop_clusters(clusters):
    for cluster in clusters.values():
        subprocess.run(
            as_server_user([pg_program("pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(cluster["data_dir"])]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )


def start_pg_users(port, rate, script, log):
    """`pgbench` as the users of one live cluster: `rate` transactions per second."""
    return subprocess.Popen(
        [pg_program("pgbench"), "-n", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c", "4", "-j", "1",
         "-R", str(rate), "-T", "900", "-f", str(script), "postgres"],
        stdout=log, stderr=log,
    )


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


def outcome_of(events, run, versions):
    """Return, per asset, `failed`, `held` (every profile passed) or None (still running)."""
    outcomes = {version: None for version in versions}
    passed = {version: 0 for version in versions}
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
    postgres = name in PG_RUNS
    versions = PG_VERSIONS if postgres else VERSIONS
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
    clusters = {}
    cluster_root = None
    if postgres:
        # The server user must reach the clusters' directories, which the repository's
        # own may not allow.
        cluster_root = pathlib.Path(f"/tmp/umbra-collect-{name}")
        if cluster_root.exists():
            subprocess.run(["rm", "-rf", str(cluster_root)], check=True)
        cluster_root.mkdir(parents=True)
        clusters = start_clusters(index, cluster_root)
        users_script = work / "users.sql"
        users_script.write_text(
            f"BEGIN;\nINSERT INTO orders (amount) VALUES (42);\nSELECT pg_sleep({PG_SLEEP_SECONDS});\nCOMMIT;\n"
        )
        config.write_text(pg_engine_toml(name, index, run, work / "work", clusters))
    else:
        config.write_text(engine_toml(name, index, run, work / "work"))
    api = f"http://127.0.0.1:{api_port_of(index)}"

    def start_users_of(position):
        if postgres:
            port = clusters[versions[position]]["port"]
            return start_pg_users(port, run["baseline_rps"], users_script, users_log)
        return start_users(load_bin, live_port_of(index, position), run["baseline_rps"], users_log)

    print(f"[{name}] starting the engine ({api})", flush=True)
    log = open(work / "umbra.log", "wb")
    users_log = open(work / "users.log", "wb")
    started_ms = int(time.time() * 1000)
    engine = subprocess.Popen([str(umbra), "run", "--config", str(config)], stdout=log, stderr=log)
    users = []
    try:
        wait_for_api(api, engine)
        users = [start_users_of(position) for position in range(len(versions))]
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while True:
            if engine.poll() is not None:
                raise SystemExit(f"[{name}] umbra run exited with status {engine.returncode}: see {work / 'umbra.log'}")
            events = get_json(f"{api}/v1/events?since={started_ms}")
            outcomes, failures = outcome_of(events, run, versions)
            if all(outcomes.values()):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"[{name}] timed out after {RUN_TIMEOUT_SECONDS} s with outcomes {outcomes}")
            for position, user in enumerate(users):
                if user.poll() is not None:
                    users[position] = start_users_of(position)
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
        stop_clusters(clusters)
        if clusters:
            shutil.rmtree(cluster_root, ignore_errors=True)
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


def committed_runs():
    """Rows and summaries of the runs already in `models/data`, by run name, so a merge can
    keep the runs that were not collected again."""
    rows, summaries = {}, {}
    if (DATA / "demo-runs.csv.gz").exists() and (DATA / "demo-runs.json").exists():
        with gzip.open(DATA / "demo-runs.csv.gz", "rt", newline="") as source:
            for row in csv.DictReader(source):
                rows.setdefault(row["run"], []).append(row)
        summaries = {summary["run"]: summary for summary in json.loads((DATA / "demo-runs.json").read_text())}
    return rows, summaries


def merge():
    """Combine every run's export into one CSV, with an episode per run and asset. A run
    without a fresh export keeps its rows from the committed data."""
    rows = []
    summaries = []
    header = None
    kept_rows, kept_summaries = committed_runs()
    for name in RUNS:
        work = OUTPUT / name
        if not (work / "dataset.csv").exists():
            if name not in kept_rows or name not in kept_summaries:
                raise SystemExit(f"no data for the run `{name}`: run `collect.py run {name}` first")
            print(f"[{name}] kept from {DATA / 'demo-runs.csv.gz'}")
            rows.extend(kept_rows[name])
            summaries.append(kept_summaries[name])
            continue
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
    if header is None:
        raise SystemExit("no fresh run to merge: collect one with `collect.py run NAME` first")
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
