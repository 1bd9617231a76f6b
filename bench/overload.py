#!/usr/bin/env python3
"""Overload (issue 13): `kiln serve` offered 4x its capacity.

    cargo build --bin kiln && python3 bench/overload.py --kiln-bin target/debug/kiln

Targets: under an overload of 4x capacity, 0 responses other than 200 or 503/429, health
endpoints answer in < 50 ms p99, and goodput (200s per second) stays >= 90 % of capacity.

One `kiln serve --cache off` (every request runs its model) serves the house-price forest
(`house-price`) and the MLP (`mlp`) from a local registry, at its default backpressure
settings unless `--serve-args` says otherwise. The load mixes four requests in equal
parts: each model through the seed API (`POST /v1/models/{name}/predict`, one row) and
OIP v2 (`POST /v2/models/{name}/infer`, one row).

1. Capacity: closed loop (each connection sends its next request when its answer arrives)
   at each of `--capacity-connections`; capacity is the highest 200s/s of them (the
   plateau: the table shows each level, so a still-rising curve would show).
2. Overload, open loop at `--factor` (4) x capacity: requests are sent on a schedule
   whatever the server answers, which is what "offered load" means; a closed loop with 4x
   the connections would offer only what the server's own latency lets through (it slows
   down its clients). The achieved offered rate is printed: on 2 cores the Python load
   generator competes with the server, and falls behind when it cannot keep up.
   `--modes open,closed` also runs the closed loop at `--factor` x the connections of the
   capacity plateau, for comparison.
3. During each overload phase two separate processes GET /v2/health/live and
   /v2/health/ready in turn every 50 ms, each on a connection of its own: one on the main
   port (`--listen`, which the load shares), one on the health listener (`--health-listen`,
   served by a thread and runtime of its own): p50, p99, max of each. The same probes run
   for a few seconds with no load first (the `idle` row). The health target is judged on
   the health listener, where probes belong under load; the main port's figure is shown.

The server's peak RSS is its VmHWM at the end; `kiln_overloaded_total` by reason comes
from its /metrics.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_load import (  # noqa: E402
    CONN_ERROR, ROOT, TIMEOUT, Conn, Prober, Records, Target, components, cpu_seconds, free_port, http_request, machine_note,
    oip_body, percentile, proc_status, run_load, seed_body, wait_http,
)

MODELS = {"house_price_forest": "house-price", "mlp": "mlp"}


def targets(port: int, apis: list[str], oip_rows: int) -> list[Target]:
    out = []
    for file, name in MODELS.items():
        h = {"Content-Type": "application/json"}
        if "seed" in apis:
            out.append(Target(f"{name} seed", port, http_request("POST", f"/v1/models/{name}/predict", seed_body(file), h)))
        if "oip" in apis:
            out.append(Target(f"{name} oip", port, http_request("POST", f"/v2/models/{name}/infer", oip_body(file, oip_rows), h)))
    return out


def summarize(r: Records, duration: float) -> dict:
    counts = collections.Counter(r.status)
    ok_lat = [r.lat[i] for i in range(len(r.status)) if r.status[i] == 200]
    retry503 = sum(1 for i in range(len(r.status)) if r.status[i] == 503 and r.retry[i])
    shed_lat = [r.lat[i] for i in range(len(r.status)) if r.status[i] == 503]
    other = {s: n for s, n in counts.items() if s not in (200, 503, 429)}
    return {
        "sent": len(r.status),
        "offered": len(r.status) / duration,
        "goodput": counts.get(200, 0) / duration,
        "c200": counts.get(200, 0),
        "c503": counts.get(503, 0),
        "c429": counts.get(429, 0),
        "other": other,
        "retry503": retry503,
        "p50": percentile(ok_lat, 50) * 1000,
        "p99": percentile(ok_lat, 99) * 1000,
        "shed_p50": percentile(shed_lat, 50) * 1000,
        "shed_p99": percentile(shed_lat, 99) * 1000,
        "behind": r.behind,
    }


def health_stats(samples) -> tuple[float, float, float, int]:
    lat = [s[1] * 1000 for s in samples if s[2] == 200]
    bad = sum(1 for s in samples if s[2] != 200)
    return percentile(lat, 50), percentile(lat, 99), max(lat) if lat else float("nan"), bad


def overloaded_by_reason(port: int) -> dict:
    c = Conn(port, 5)
    status, _, body = c.send(http_request("GET", "/metrics"))
    c.close()
    out: dict = collections.Counter()
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("kiln_overloaded_total{"):
            m = re.search(r'reason="([^"]+)"', line)
            out[m.group(1) if m else "?"] += int(float(line.rsplit(" ", 1)[1]))
    return dict(out)


def fmt_other(other: dict) -> str:
    if not other:
        return "0"
    names = {CONN_ERROR: "conn", TIMEOUT: "timeout"}
    return ", ".join(f"{names.get(s, s)}: {n}" for s, n in sorted(other.items()))


def measure_cpu(pid: int):
    """Returns a function giving the CPU cores used since this call by the server and by
    this script's finished children (the load generator processes)."""
    t0, s0, c0 = time.time(), cpu_seconds(pid), resource.getrusage(resource.RUSAGE_CHILDREN)

    def done() -> tuple[float, float]:
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        dt = time.time() - t0
        return ((cpu_seconds(pid) - s0) / dt, (c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime) / dt)

    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln-bin", default=str(ROOT / "target" / "release" / "kiln"))
    ap.add_argument("--components", default="/tmp/kiln-bench-components",
                    help="where the example models are compiled once and kept (and the AOT cache)")
    ap.add_argument("--capacity-connections", default="4,8,16,32")
    ap.add_argument("--capacity-duration", type=float, default=10)
    ap.add_argument("--factor", type=float, default=4)
    ap.add_argument("--duration", type=float, default=30, help="seconds of each overload phase")
    ap.add_argument("--modes", default="open", help="open and/or closed (comma-separated)")
    ap.add_argument("--connections", type=int, default=900,
                    help="client connections of the open loop (kiln serve accepts 1024 by default; the prober needs one)")
    ap.add_argument("--processes", type=int, default=2, help="load generator processes")
    root = os.geteuid() == 0
    ap.add_argument("--load-nice", type=int, default=0, help="nice increment of the load generator processes")
    ap.add_argument("--server-nice", type=int, default=-5 if root else 0,
                    help="nice increment of kiln serve (default -5 as root: ahead of the load generator and of "
                         "whatever else runs on the machine, e.g. builds)")
    ap.add_argument("--probe-nice", type=int, default=-10 if root else 0,
                    help="nice increment of the health prober (default -10 as root, so that its own scheduling "
                         "delay does not count as the server's)")
    ap.add_argument("--apis", default="seed,oip", help="seed and/or oip")
    ap.add_argument("--oip-rows", type=int, default=1, help="rows per OIP request")
    ap.add_argument("--serve-args", default="", help="extra `kiln serve` flags, e.g. '--max-concurrent-calls 2:16'")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    note = machine_note()
    work = Path(tempfile.mkdtemp(prefix="kiln-overload-"))
    comp = Path(args.components)
    env = dict(os.environ, KILN_HOME=str(work / "home"), KILN_ACTOR="bench", KILN_CACHE_DIR=str(comp / "aot"))
    env.setdefault("KILN_LOG", "warn")

    def kiln(*a: str) -> str:
        return subprocess.run([args.kiln_bin, *a], env=env, check=True, capture_output=True, text=True).stdout

    wasm = components(args.kiln_bin, list(MODELS), comp, env)
    for file, name in MODELS.items():
        kiln("models", "register", str(wasm[file]), "--name", name)
        kiln("models", "promote", name, "1", "Production")
    port = free_port()
    hport = free_port()
    log = open(work / "serve.log", "w")
    nice = args.server_nice
    server = subprocess.Popen([args.kiln_bin, "serve", "--listen", f"127.0.0.1:{port}", "--health-listen", f"127.0.0.1:{hport}",
                               "--cache", "off", *args.serve_args.split()],
                              env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=(lambda: os.nice(nice)) if nice else None)
    rows = []
    caps = []
    try:
        wait_http(port, "/v2/health/ready", 600, server)
        tg = targets(port, args.apis.split(","), args.oip_rows)
        c = Conn(port, 10)
        for t in tg:  # every request answers 200 once, and warms its model
            status, _, body = c.send(t.raw)
            if status != 200:
                raise SystemExit(f"{t.label}: {status} {body[:300]!r}")
        c.close()
        load = dict(processes=args.processes, nice=args.load_nice)
        paths = ["/v2/health/live", "/v2/health/ready"]
        probes = [Prober(pt, paths, 0.05, 5, start_delay=0.2, nice=args.probe_nice) for pt in (port, hport)]
        idle_health = [health_stats(p.result()) for p in probes]

        for n in [int(x) for x in args.capacity_connections.split(",")]:
            run_load(tg, 2, n, **load)  # warm-up
            cpu = measure_cpu(server.pid)
            s = summarize(run_load(tg, args.capacity_duration, n, **load), args.capacity_duration)
            s["cpu"] = cpu()
            caps.append((n, s))
            print(f"capacity, {n} connections: {s['goodput']:.0f} 200s/s, p99 {s['p99']:.1f} ms", file=sys.stderr)
        best_n, best = max(caps, key=lambda x: x[1]["goodput"])
        capacity = best["goodput"]

        for mode in args.modes.split(","):
            probes = [Prober(pt, paths, 0.05, args.duration + 0.5, nice=args.probe_nice) for pt in (port, hport)]
            cpu = measure_cpu(server.pid)
            if mode == "open":
                rate = args.factor * capacity
                r = run_load(tg, args.duration, args.connections, rate=rate, **load)
                label = f"open loop, {rate:.0f} req/s scheduled ({args.connections} connections)"
            else:
                conns = int(args.factor * best_n)
                r = run_load(tg, args.duration, conns, **load)
                label = f"closed loop, {conns} connections"
            s = summarize(r, args.duration)
            s["cpu"] = cpu()
            rows.append((label, s, [health_stats(p.result()) for p in probes]))
            print(f"{label}: {s['goodput']:.0f} 200s/s", file=sys.stderr)
            time.sleep(2)
        reasons = overloaded_by_reason(port)
        hwm = proc_status(server.pid, "VmHWM") / 1024
        rss = proc_status(server.pid, "VmRSS") / 1024
    finally:
        server.terminate()
        server.wait()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\n`kiln serve --cache off {args.serve_args}` (binary {args.kiln_bin}), house-price + mlp, "
          f"{args.apis} in equal parts, {args.oip_rows} row(s) per OIP request; {note}; load generator: "
          f"{args.processes} processes on the same cores; nice: server {args.server_nice}, load {args.load_nice}, "
          f"health prober {args.probe_nice}\n")
    print("| capacity (closed loop) | connections | 200s/s | p50 / p99 ms | other than 200 | CPU cores: server / load generator |")
    print("|---|---:|---:|---:|---:|---:|")
    for n, s in caps:
        print(f"| {'**plateau**' if n == best_n else ''} | {n} | {s['goodput']:.0f} | {s['p50']:.1f} / {s['p99']:.1f} | "
              f"{s['c503'] + s['c429']} 503/429, {fmt_other(s['other'])} other | {s['cpu'][0]:.2f} / {s['cpu'][1]:.2f} |")
    print(f"\ncapacity = {capacity:.0f} req/s; overload = {args.factor:g}x; {args.duration:g} s per phase\n")
    print("| phase | offered req/s | goodput 200s/s | ÷ capacity | 200 | 503 | 429 | other | 503 with Retry-After "
          "| p50 / p99 of 200s ms | p50 / p99 of 503s ms | health on --health-listen p50 / p99 / max ms "
          "| health on --listen p50 / p99 / max ms | CPU cores: server / load | targets met? |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")

    def fmt_health(h) -> str:
        return f"{h[0]:.1f} / {h[1]:.1f} / {h[2]:.1f}{f' ({h[3]} not 200)' if h[3] else ''}"

    main_h, own_h = idle_health
    print(f"| idle (no load) | | | | | | | | | | | {fmt_health(own_h)} | {fmt_health(main_h)} | | |")
    for label, s, (main_h, h) in rows:
        ratio = s["goodput"] / capacity
        met = [("other=0", not s["other"]), ("health p99<50ms", h[1] < 50 and h[3] == 0), ("goodput>=90%", ratio >= 0.9)]
        behind = f" ({s['behind']} sends skipped: client >1 s behind)" if s["behind"] else ""
        print(f"| {label} | {s['offered']:.0f}{behind} | {s['goodput']:.0f} | {ratio:.0%} | {s['c200']} | {s['c503']} | "
              f"{s['c429']} | {fmt_other(s['other'])} | {s['retry503']} | {s['p50']:.1f} / {s['p99']:.1f} | "
              f"{s['shed_p50']:.1f} / {s['shed_p99']:.1f} | "
              f"{fmt_health(h)} | {fmt_health(main_h)} | "
              f"{s['cpu'][0]:.2f} / {s['cpu'][1]:.2f} | "
              f"{', '.join(f'{n}: {chr(0x2713) if ok else chr(0x2717)}' for n, ok in met)} |")
    print(f"\nserver: peak RSS (VmHWM) {hwm:.0f} MiB, RSS at the end {rss:.0f} MiB; "
          f"kiln_overloaded_total by reason: {reasons or 'none'}")


if __name__ == "__main__":
    main()
