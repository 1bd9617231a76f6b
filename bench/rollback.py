#!/usr/bin/env python3
"""How fast a failing canary is rolled back: 3 `kiln serve --join` nodes, steady traffic
(half the rows make the faulty release fail), canary steps 20,50,100, and for several
analysis intervals the time from the canary taking traffic (the step's analysis window
opening) to the rollback, and from the promote to the rollback.

    cargo build --release --bin kiln && python3 bench/rollback.py [--intervals 2s,5s,10s] [--rounds 3]

The faulty release is `examples/models/echo4_faulty.onnx` (it fails on rows whose first
value is negative; its golden request passes, so the smoke test lets it through and only
the analysis can catch it). Thresholds: --max-error-rate 0.02, --min-requests 20.

Target: a failing canary rolled back within 2 analysis intervals.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from propagation import BODY, free_port, served_version, wait  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def body(first: float) -> bytes:
    return json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [first, 2, 3, 4]}]}).encode()


def parse(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln-bin", default=str(ROOT / "target" / "release" / "kiln"))
    ap.add_argument("--intervals", default="2s,5s,10s")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kiln-rollback-"))
    env = dict(os.environ, KILN_HOME=str(work / "registry"), KILN_ACTOR="bench", KILN_CACHE_DIR=str(work / "aot"))

    def kiln(*a: str) -> str:
        return subprocess.run([args.kiln_bin, *a], env=env, check=True, capture_output=True, text=True).stdout

    golden = work / "golden.json"
    golden.write_text(BODY.decode())
    kiln("models", "register", str(ROOT / "examples/models/echo4.onnx"), "--name", "echo", "--golden", str(golden))
    kiln("models", "promote", "echo", "1", "Production")
    join_token = work / "join.token"
    join_token.write_text(kiln("tokens", "create", "--name", "bench-join", "--role", "node"))
    sync_addr = f"127.0.0.1:{free_port()}"
    procs = [subprocess.Popen([args.kiln_bin, "sync", "run", "--listen", sync_addr, "--check-interval", "250ms"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    addrs = []
    rows = []
    try:
        for i in range(3):
            addr = f"127.0.0.1:{free_port()}"
            procs.append(subprocess.Popen(
                [args.kiln_bin, "serve", "--listen", addr, "--join", f"http://{sync_addr}", "--join-token-file", str(join_token),
                 "--node-name", f"edge-{i + 1}", "--cache", "off"],
                env=dict(env, KILN_HOME=str(work / f"node-{i}")), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            addrs.append(addr)
        wait("3 nodes serving version 1", lambda: all(served_version(a) == "1" for a in addrs), 300)
        stop = threading.Event()

        def load(n: int) -> None:
            k = n
            while not stop.is_set():
                a = addrs[k % len(addrs)]
                k += 1
                try:
                    urllib.request.urlopen(urllib.request.Request(f"http://{a}/v2/models/echo/infer", data=body(-3.0 if k % 2 else 5.0)), timeout=5).read()
                except Exception:
                    pass

        threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(4)]
        for t in threads:
            t.start()
        for interval in args.intervals.split(","):
            ms = int(float(interval.rstrip("s")) * 1000) if not interval.endswith("ms") else int(interval[:-2])
            kiln("rollout", "policy", "echo", "--steps", "20,50,100", "--interval", interval,
                 "--max-error-rate", "0.02", "--min-requests", "20")
            from_window, from_promote = [], []
            for _ in range(args.rounds):
                out = kiln("models", "register", str(ROOT / "examples/models/echo4_faulty.onnx"), "--name", "echo",
                           "--golden", str(golden), "--json")
                # The same component each round: the registry returns the existing version,
                # which its previous rollback put back in stage None.
                version = json.loads(out)["version"]
                start = dt.datetime.now(dt.timezone.utc)
                kiln("models", "promote", "echo", str(version), "Production")
                deadline = time.monotonic() + 10 * ms / 1000 + 60
                while True:
                    listed = json.loads(kiln("rollout", "status", "echo", "--json"))
                    r = listed[0] if listed else {}
                    if r and r["to_version"] == version and r["state"] == "rolled_back" and parse(r["created_at"]) >= start - dt.timedelta(seconds=1):
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit(f"no rollback: {r}")
                    time.sleep(0.1)
                ended = parse(r["updated_at"])
                from_window.append((ended - parse(r["step_started_at"])).total_seconds() * 1000)
                from_promote.append((ended - start).total_seconds() * 1000)
                time.sleep(1)
            rows.append((interval, ms, from_window, from_promote))
        stop.set()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
    print(f"\nfailing canary -> rolled back (3 nodes, 20 % canary, half the rows fail on it; {args.rounds} rounds; "
          f"{os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}); target: within 2 intervals\n")
    print("| interval | from canary traffic: median / max | in intervals (max) | from promote: median / max | met? |")
    print("|---:|---:|---:|---:|:---:|")
    for interval, ms, w, p in rows:
        print(f"| {interval} | {statistics.median(w):.0f} / {max(w):.0f} ms | {max(w) / ms:.2f} | "
              f"{statistics.median(p):.0f} / {max(p):.0f} ms | {'yes' if max(w) <= 2 * ms else 'no'} |")


if __name__ == "__main__":
    main()
