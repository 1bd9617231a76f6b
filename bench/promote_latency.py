#!/usr/bin/env python3
"""How long a promotion takes to reach traffic: from `kiln models promote` (another
process, writing the registry) to the first response served by the promoted version.

    cargo build --release --bin kiln && python3 bench/promote_latency.py [--rounds 20]

A client thread keeps asking `kiln serve` for `model_version: "Production"` of one model
with two registered versions; each round promotes the other version with the CLI and
records (a) the time from the CLI's exit (the registry commit) to the first answer from
the new version and (b) the time from the CLI's start, which adds the CLI's own process
start and SQLite write. The server polls the registry every 100 ms (its default).
Target: promote -> served in <= 1 s.
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
MODELS = ROOT / "examples" / "models"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln-bin", default=str(ROOT / "target" / "release" / "kiln"))
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()

    home = tempfile.mkdtemp(prefix="kiln-promote-")
    env = dict(os.environ, KILN_HOME=home, KILN_ACTOR="bench")

    def kiln(*a: str) -> str:
        return subprocess.run([args.kiln_bin, *a], env=env, check=True, capture_output=True, text=True).stdout

    print("compiling and registering two versions of `iris` ...", file=sys.stderr)
    kiln("models", "register", str(MODELS / "iris_logreg.onnx"), "--name", "iris")
    kiln("models", "register", str(MODELS / "ops_linear_svc.onnx"), "--name", "iris")
    kiln("models", "promote", "iris", "1", "Production")
    # Serve both all the time (an alias on v2) so each round measures the switch, not a load.
    kiln("models", "alias", "iris", "challenger", "2")

    port = free_port()
    server = subprocess.Popen(
        [args.kiln_bin, "serve", "--listen", f"127.0.0.1:{port}", "--cache", "off"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1/models/iris/predict"
    body = json.dumps({"features": [6.3, 3.4, 5.6, 2.4], "model_version": "Production"}).encode()
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1)
                break
            except Exception:
                if time.time() > deadline:
                    raise SystemExit("kiln serve did not become ready")
                time.sleep(0.1)

        seen: list[tuple[float, str]] = []
        failures = [0]
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                try:
                    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=5) as r:
                        v = json.load(r)["model_version"]
                    seen.append((time.monotonic(), v))
                except Exception:
                    failures[0] += 1

        t = threading.Thread(target=client, daemon=True)
        t.start()
        from_commit, from_start = [], []
        current = "1"
        for _ in range(args.rounds):
            target = "2" if current == "1" else "1"
            start = time.monotonic()
            kiln("models", "promote", "iris", target, "Production")
            committed = time.monotonic()
            while True:
                hit = [ts for ts, v in seen[-50:] if v == target and ts >= committed]
                if hit:
                    from_commit.append(min(hit) - committed)
                    from_start.append(min(hit) - start)
                    break
                if time.monotonic() - committed > 5:
                    raise SystemExit(f"version {target} not served 5 s after the promote")
                time.sleep(0.002)
            current = target
            time.sleep(0.3)
        stop.set()
        t.join()
    finally:
        server.terminate()
        server.wait()

    def row(name: str, xs: list[float]) -> str:
        ms = sorted(x * 1000 for x in xs)
        return (
            f"| {name} | {len(ms)} | {ms[0]:.0f} | {statistics.median(ms):.0f} | "
            f"{ms[int(0.9 * (len(ms) - 1))]:.0f} | {ms[-1]:.0f} |"
        )

    print(f"\npromote -> served, {args.rounds} rounds, poll interval 100 ms, {len(seen)} requests, "
          f"{failures[0]} failed\n")
    print("| measured from | rounds | min ms | p50 ms | p90 ms | max ms |")
    print("|---|---|---|---|---|---|")
    print(row("registry commit (CLI exit)", from_commit))
    print(row("CLI start", from_start))
    print(f"\ntarget <= 1000 ms: {'met' if max(from_start) <= 1.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
