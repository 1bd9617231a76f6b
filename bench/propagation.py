#!/usr/bin/env python3
"""Propagation: from `kiln models promote` to EVERY node of a fleet serving the new version,
for 1, 10 and 50 `kiln serve --join` nodes on loopback, and what `kiln sync run` costs
(memory, CPU) while it holds them.

    cargo build --release --bin kiln && python3 bench/propagation.py [--nodes 1,10,50] [--rounds 5]

Setup: one registry with versions of the echo model (`examples/models/echo4.onnx` compiled
with different version labels, so different digests; a component is 17 MiB, the tract
engine being most of it), rollout policy `direct` (switch at once after the golden smoke
test on every node: the propagation path without a canary's waiting), one `kiln sync run`,
N nodes sharing one AOT cache directory (as nodes on one host would; a node that must
compile a component itself takes seconds, which is why an upload is compiled ahead).
Three paths are timed, each from the CLI's start to the LAST node's first answer from the
new version (every node polled every 50 ms, so each figure is an upper bound within 50 ms):

- cold: a version no node has seen is promoted: its component is uploaded to every node
  (and SHA-256-checked and fsynced there) before the switch (one round per fleet);
- staged: the version was moved to Staging first, so the sync service uploaded it to every
  node ahead (and the nodes compiled it); the promotion only switches routing (one round);
- switch: promotions back and forth between two versions every node holds (ROUNDS rounds).

The sync service's RSS and CPU are read from /proc during a 10 s hold with the fleet
converged (heartbeats every second, one state check per node per second) and over the
promote rounds.

Target: promote -> 50 loopback nodes serving the new version <= 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
BODY = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}).encode()
TICK = os.sysconf("SC_CLK_TCK")
# Each node is asked every POLL seconds: the figures are upper bounds within POLL. Polling
# faster costs the 2-core machine more than it measures (50 Python threads).
POLL = 0.05


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_version(addr: str) -> str | None:
    req = urllib.request.Request(f"http://{addr}/v2/models/echo/infer", data=BODY)
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.headers.get("x-kiln-model-version")
    except Exception:
        return None


def wait(what: str, check, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_fleet(kiln_bin: str, n: int, rounds: int, workdir: Path, cache_dir: Path) -> dict:
    home = workdir / f"registry-{n}"
    env = dict(os.environ, KILN_HOME=str(home), KILN_ACTOR="bench", KILN_CACHE_DIR=str(cache_dir))
    # KILN_LOG passes through: the sync service logs to sync-N.log in the work directory.

    def kiln(*a: str) -> str:
        return subprocess.run([kiln_bin, *a], env=env, check=True, capture_output=True, text=True).stdout

    golden = workdir / "golden.json"
    golden.write_text(BODY.decode())
    for label in ("v1", "v2", "v3"):
        wasm = workdir / f"echo-{label}.wasm"
        if not wasm.exists():
            subprocess.run(
                [kiln_bin, "compile", str(ROOT / "examples/models/echo4.onnx"), "--model-version", label, "-o", str(wasm)],
                env=env, check=True, capture_output=True,
            )
        kiln("models", "register", str(wasm), "--name", "echo", "--golden", str(golden))
    kiln("rollout", "policy", "echo", "--strategy", "direct")
    kiln("models", "promote", "echo", "1", "Production")

    # Nodes join with a join token, and keep TOKEN as a fixed admin token for the state reads below.
    join_token = home / "join.token"
    join_token.write_text(kiln("tokens", "create", "--name", "bench-join", "--role", "node"))
    sync_addr = f"127.0.0.1:{free_port()}"
    procs: list[subprocess.Popen] = []
    sync = subprocess.Popen(
        [kiln_bin, "sync", "run", "--listen", sync_addr],
        env=env, stdout=subprocess.DEVNULL, stderr=open(workdir / f"sync-{n}.log", "w"),
    )
    procs.append(sync)
    addrs = []
    try:
        for i in range(n):
            addr = f"127.0.0.1:{free_port()}"
            node_env = dict(env, KILN_HOME=str(workdir / f"node-{n}-{i}"), KILN_ADMIN_TOKEN=TOKEN)
            procs.append(subprocess.Popen(
                [kiln_bin, "serve", "--listen", addr, "--join", f"http://{sync_addr}", "--join-token-file", str(join_token),
                 "--node-name", f"edge-{i + 1}", "--cache", "off"],
                env=node_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
            addrs.append(addr)
        wait(f"{n} nodes serving version 1", lambda: all(served_version(a) == "1" for a in addrs), 300)
        # A converged fleet at rest: what holding it costs the sync service.
        time.sleep(2)
        cpu0, t0 = proc_cpu_seconds(sync.pid), time.monotonic()
        time.sleep(10)
        idle_cpu = (proc_cpu_seconds(sync.pid) - cpu0) / (time.monotonic() - t0) * 100
        idle_rss = proc_rss_mib(sync.pid)

        cpu1, t1 = proc_cpu_seconds(sync.pid), time.monotonic()
        peak_rss = [idle_rss]

        def promote(target: str, stage: str = "Production") -> float:
            first: dict[str, float] = {}
            stop = threading.Event()

            def poll(addr: str) -> None:
                while not stop.is_set():
                    if served_version(addr) == target:
                        first[addr] = time.monotonic()
                        return
                    time.sleep(POLL)

            threads = [threading.Thread(target=poll, args=(a,), daemon=True) for a in addrs]
            start = time.monotonic()
            kiln("models", "promote", "echo", target, stage)
            for t in threads:
                t.start()
            deadline = start + 60
            while len(first) < len(addrs) and time.monotonic() < deadline:
                time.sleep(0.01)
                peak_rss[0] = max(peak_rss[0], proc_rss_mib(sync.pid))
            stop.set()
            if len(first) < len(addrs):
                raise SystemExit(f"{len(addrs) - len(first)} of {n} nodes did not serve version {target} within 60 s")
            wait("the rollout to finish", lambda: '"progressing"' not in kiln("rollout", "status", "echo", "--json"), 30)
            time.sleep(0.5)
            return max(first.values()) - start

        def state(addr: str) -> dict:
            req = urllib.request.Request(f"http://{addr}/admin/v1/state", headers={"authorization": f"Bearer {TOKEN}"})
            with urllib.request.urlopen(req, timeout=5) as r:
                return json.load(r)

        cold = promote("2")
        # Staged: v3 to Staging; wait until every node holds it (uploaded ahead).
        digest = json.loads(kiln("models", "show", "echo/3", "--json"))["digest"]
        kiln("models", "promote", "echo", "3", "Staging")
        wait("every node to hold the Staging version", lambda: all(digest in state(a)["digests"] for a in addrs), 120)
        time.sleep(3)  # let the nodes' background compiles (cache hits here) finish
        staged = promote("3")
        figures = []
        current = "3"
        for _ in range(rounds):
            target = "2" if current == "3" else "3"
            figures.append(promote(target))
            current = target
        busy_cpu = (proc_cpu_seconds(sync.pid) - cpu1) / (time.monotonic() - t1) * 100
        node_rss = statistics.mean(proc_rss_mib(p.pid) for p in procs[1:])
        return {
            "nodes": n,
            "rounds": rounds,
            "cold_ms": cold * 1000,
            "staged_ms": staged * 1000,
            "p50_ms": statistics.median(figures) * 1000,
            "max_ms": max(figures) * 1000,
            "sync_rss_idle_mib": idle_rss,
            "sync_rss_peak_mib": peak_rss[0],
            "sync_cpu_idle_pct": idle_cpu,
            "sync_cpu_rounds_pct": busy_cpu,
            "node_rss_mib": node_rss,
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln-bin", default=str(ROOT / "target" / "release" / "kiln"))
    ap.add_argument("--nodes", default="1,10,50")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kiln-propagation-"))
    cache_dir = workdir / "aot"
    rows = []
    for n in [int(x) for x in args.nodes.split(",")]:
        print(f"fleet of {n} node(s) ...", file=sys.stderr)
        rows.append(run_fleet(args.kiln_bin, n, args.rounds, workdir, cache_dir))
    print(f"\npromote -> every node serving the new version (policy direct; {os.cpu_count()} cores; "
          f"{time.strftime('%Y-%m-%d')}); target <= 2 s\n")
    print("| nodes | cold (upload 17 MiB to each) | staged (uploaded ahead) | switch p50 / max | sync RSS idle / peak | sync CPU idle / during rounds | node RSS (mean) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['nodes']} | {r['cold_ms']:.0f} ms | {r['staged_ms']:.0f} ms | {r['p50_ms']:.0f} / {r['max_ms']:.0f} ms | "
              f"{r['sync_rss_idle_mib']:.1f} / {r['sync_rss_peak_mib']:.1f} MiB | "
              f"{r['sync_cpu_idle_pct']:.1f} % / {r['sync_cpu_rounds_pct']:.1f} % | {r['node_rss_mib']:.0f} MiB |")
    print(json.dumps(rows), file=sys.stderr)


if __name__ == "__main__":
    main()
