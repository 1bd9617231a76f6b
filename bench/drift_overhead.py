#!/usr/bin/env python3
"""What profiling traffic for drift costs on the request path: the house-price forest served
by two `kiln serve --cache off` processes on one registry, one profiling every request (the
default) and one started with `--no-drift-profiles`, loaded in turn (never at the same time)
with wrk, closed loop, for `--rounds` rounds per workload (each round both servers back to back,
in turn first). Prints req/s (median of the rounds), the ratio profiled / not profiled (of the
medians, and the median of the rounds' ratios), p99, each server's request-path CPU time per
request (every thread but the profiler's) and the profiler thread's apart (its schedstat).
`--control` runs both servers unprofiled: an A/A run that shows the bench's own noise;
`--pin-server`/`--pin-load` put the servers and wrk on CPUs of their own (taskset).

    cargo build --bin kiln && python3 bench/drift_overhead.py --kiln-bin target/debug/kiln

Profiling runs on a lowest-priority thread (issue 14): under a closed loop that saturates
the CPU it falls behind and sheds rows (`kiln_drift_rows_shed_total`), so the table also
says what share of the profiled server's rows were profiled.

Workloads: the seed API with one row (10 input values and 1 output value profiled per
request) and OIP with a 64-row batch (640 + 64 values). Every request carries the same
body, so after 512 values a minute each column is in its KLL sketch: the profile's
expensive path. Target (issue 14): profiling costs at most 5 % of throughput on the forest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_load import ROOT, components, cpu_seconds, free_port, machine_note, thread_cpu_seconds, wait_http  # noqa: E402

LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%(body)s]==]
done = function(summary, latency, requests)
  io.write(string.format('KILN_BENCH {"requests": %%d, "duration_us": %%d, "errors": %%d, "p99_us": %%d}\n',
    summary.requests, summary.duration, summary.errors.status + summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout, latency:percentile(99)))
end
"""


def pinned(cpus: str | None, cmd: list[str]) -> list[str]:
    """`cmd` run on the CPUs `cpus` (a taskset list) when given."""
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


def wrk(url: str, body: str, seconds: int, connections: int, work: Path, cpus: str | None = None) -> dict:
    script = work / "post.lua"
    script.write_text(LUA % {"body": body})
    run = subprocess.run(pinned(cpus, ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "5s",
                          "-s", str(script), url]), capture_output=True, text=True)
    for line in run.stdout.splitlines():
        if line.startswith("KILN_BENCH "):
            stats = json.loads(line[len("KILN_BENCH "):])
            stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
            return stats
    raise SystemExit(f"wrk failed ({run.returncode}): {run.stdout}\n{run.stderr}")


def shed_rows(port: int) -> float:
    """kiln_drift_rows_shed_total of the server on `port`."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith("kiln_drift_rows_shed_total "):
            return float(line.split()[1])
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln-bin", default=str(ROOT / "target" / "release" / "kiln"))
    ap.add_argument("--components", default="/tmp/kiln-bench-components")
    ap.add_argument("--seconds", type=int, default=10, help="per measurement")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--control", action="store_true",
                    help="an A/A run: the 'profiled' server also runs with --no-drift-profiles, so the ratio "
                         "shows the bench's own noise")
    ap.add_argument("--pin-server", help="taskset CPU list for both servers, e.g. 1: each then has that core, "
                                         "its profiler thread the core's idle time (default: no pinning)")
    ap.add_argument("--pin-load", help="taskset CPU list for wrk, e.g. 0 (default: no pinning)")
    args = ap.parse_args()
    if (args.pin_server or args.pin_load) and shutil.which("taskset") is None:
        raise SystemExit("--pin-* needs taskset (util-linux)")
    note = machine_note()
    work = Path(tempfile.mkdtemp(prefix="kiln-drift-overhead-"))
    comp = Path(args.components)
    env = dict(os.environ, KILN_HOME=str(work / "home"), KILN_ACTOR="bench", KILN_CACHE_DIR=str(comp / "aot"))
    env.setdefault("KILN_LOG", "warn")
    wasm = components(args.kiln_bin, ["house_price_forest"], comp, env)
    subprocess.run([args.kiln_bin, "models", "register", str(wasm["house_price_forest"]), "--name", "house-price",
                    "--stage", "Production"], env=env, check=True, capture_output=True)
    request = json.loads((ROOT / "examples" / "models" / "house_price_forest.request.json").read_text())
    tensor = request["inputs"][0]
    width = tensor["shape"][1]
    row = tensor["data"][:width]
    seed = json.dumps({"features": row})
    batch = json.dumps({"inputs": [{"name": tensor["name"], "shape": [64, width], "datatype": tensor["datatype"],
                                    "data": row * 64}]})
    workloads = [("seed, 1 row", "/v1/models/house-price/predict", seed, 1),
                 ("OIP, 64 rows", "/v2/models/house-price/infer", batch, 64)]
    servers = {}
    try:
        first = ["--no-drift-profiles"] if args.control else []
        for label, extra in [("profiled", first), ("not profiled", ["--no-drift-profiles"])]:
            port = free_port()
            proc = subprocess.Popen(pinned(args.pin_server, [args.kiln_bin, "serve", "--listen", f"127.0.0.1:{port}",
                                                             "--cache", "off", *extra]),
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            servers[label] = (port, proc)
            wait_http(port, "/v2/health/ready", 600, proc)
        rows = []
        for name, path, body, per_request in workloads:
            results = {label: [] for label in servers}
            shed, served = 0.0, 0.0
            for label, (port, _) in servers.items():
                wrk(f"http://127.0.0.1:{port}{path}", body, 2, args.connections, work, args.pin_load)  # warm-up
            for round_ in range(args.rounds):
                # Each round runs both servers back to back, in turn first (A B, B A, …), so
                # that going first or second does not favour either.
                order = list(servers.items())
                if round_ % 2:
                    order.reverse()
                for label, (port, proc) in order:
                    before = shed_rows(port) if label == "profiled" else 0.0
                    cpu, profiler = cpu_seconds(proc.pid), thread_cpu_seconds(proc.pid, "kiln-profiler")
                    r = wrk(f"http://127.0.0.1:{port}{path}", body, args.seconds, args.connections, work, args.pin_load)
                    profiler = thread_cpu_seconds(proc.pid, "kiln-profiler") - profiler
                    cpu = cpu_seconds(proc.pid) - cpu
                    # The request path's CPU: every thread but the profiler's, whose work is
                    # done off that path (on otherwise idle CPU) and shown apart.
                    r["cpu_us"] = (cpu - profiler) * 1e6 / max(r["requests"], 1)
                    r["profiler_us"] = profiler * 1e6 / max(r["requests"], 1)
                    if r["errors"]:
                        raise SystemExit(f"{label} {name}: {r['errors']} errors")
                    results[label].append(r)
                    if label == "profiled":
                        shed += shed_rows(port) - before
                        served += r["requests"] * per_request
            on = statistics.median(r["rps"] for r in results["profiled"])
            off = statistics.median(r["rps"] for r in results["not profiled"])
            p99_on = statistics.median(r["p99_us"] for r in results["profiled"]) / 1000
            p99_off = statistics.median(r["p99_us"] for r in results["not profiled"]) / 1000
            # Each round's two measurements ran back to back: the median of their ratios is
            # less sensitive than the ratio of medians to the machine's speed drifting.
            paired = statistics.median(a["rps"] / b["rps"] for a, b in zip(results["profiled"], results["not profiled"]))
            # The server's CPU time per request (every thread, the profiler's included): steadier
            # than req/s when the machine's speed varies between rounds.
            cpu_on = statistics.median(r["cpu_us"] for r in results["profiled"])
            cpu_off = statistics.median(r["cpu_us"] for r in results["not profiled"])
            # Per round, back to back like the req/s ratio.
            cpu_paired = statistics.median(a["cpu_us"] / b["cpu_us"]
                                           for a, b in zip(results["profiled"], results["not profiled"]))
            profiler_us = statistics.median(r["profiler_us"] for r in results["profiled"])
            rows.append((name, on, off, p99_on, p99_off, [round(r["rps"]) for r in results["profiled"]],
                         [round(r["rps"]) for r in results["not profiled"]], 1 - shed / max(served, 1), paired,
                         cpu_on, cpu_off, cpu_paired, profiler_us))
    finally:
        for _, proc in servers.values():
            proc.terminate()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    control = " A/A CONTROL: both servers run with --no-drift-profiles;" if args.control else ""
    if args.pin_server or args.pin_load:
        control += f" servers on CPU {args.pin_server or 'any'}, wrk on CPU {args.pin_load or 'any'};"
    print(f"\nhouse-price forest, `kiln serve --cache off` (binary {args.kiln_bin}), wrk closed loop, {args.connections} "
          f"connections, {args.rounds} alternating rounds of {args.seconds} s;{control} {note}\n")
    print("| workload | profiled req/s | not profiled req/s | profiled ÷ not | median of round ratios | rows profiled | p99 profiled / not (ms) | request path CPU µs/request profiled / not | its median round ratio | profiler thread CPU µs/request | rounds profiled | rounds not |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for name, on, off, p99_on, p99_off, r_on, r_off, kept, paired, cpu_on, cpu_off, cpu_paired, profiler_us in rows:
        print(f"| {name} | {on:.0f} | {off:.0f} | {on / off:.3f} | {paired:.3f} | {100 * kept:.1f} % | {p99_on:.2f} / {p99_off:.2f} "
              f"| {cpu_on:.1f} / {cpu_off:.1f} | {cpu_paired:.3f} | {profiler_us:.2f} | {r_on} | {r_off} |")


if __name__ == "__main__":
    main()
