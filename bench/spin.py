#!/usr/bin/env python3
"""Kiln's Spin component hosted by `kiln spin up`, next to `kiln serve` in the same run:
per-request latency for the MLP and the house-price forest on the same components.

    sh edge-worker/spin/build.sh && python3 bench/spin.py [--seconds 10]

Setup: one registry (a temporary KILN_HOME) with both examples registered from their ONNX
by the release `kiln` and promoted to Production; `kiln export spin` writes the Spin app
(the router built by build.sh, the two components, kiln_models/kiln_routes); `kiln serve
--cache off` (no prediction cache: every request runs the model, as on Spin) and `kiln spin
up` on that app run side by side on 127.0.0.1. Load: `wrk` with one connection (requests
one after another: latency, not throughput) posting the example's OIP v2 infer request
(6 rows) and a one-row seed predict request; falls back to a Python client without wrk.
The Spin path adds, per request: a fresh router instance (wasmtime, component-model-async),
the wasi:http@0.3 request/response streams, the router's JSON handling in wasm, and the
slot call into the model (the same pooled model instances `kiln serve` uses).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(ROOT, "examples", "models")
OUT = os.path.join(ROOT, "target", "edge-spin")
EXAMPLES = (("mlp", "mlp"), ("house-price", "house_price_forest"))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cloudflare_worker import free_port, post, python_latency, wrk_latency  # noqa: E402


def kiln(env: dict, *args: str) -> str:
    return subprocess.run([os.path.join(ROOT, "target", "release", "kiln"), *args], env=env,
                          capture_output=True, text=True, check=True).stdout


def start(env: dict, args: list[str], port: int, log: str) -> subprocess.Popen:
    proc = subprocess.Popen([os.path.join(ROOT, "target", "release", "kiln"), *args], env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"kiln {' '.join(args)} did not start: see {log}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    router, vacant = os.path.join(OUT, "kiln_spin.wasm"), os.path.join(OUT, "vacant.wasm")
    for f in (router, vacant, os.path.join(ROOT, "target", "release", "kiln")):
        if not os.path.exists(f):
            raise SystemExit(f"{f} missing: run sh edge-worker/spin/build.sh (it builds the release kiln too)")
    use_wrk = shutil.which("wrk") is not None
    measure = wrk_latency if use_wrk else python_latency
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, KILN_HOME=os.path.join(tmp, "home"), KILN_CACHE_DIR=os.path.join(tmp, "aot"),
                   KILN_ACTOR="bench")
        for name, example in EXAMPLES:
            kiln(env, "models", "register", os.path.join(MODELS, f"{example}.onnx"), "--name", name)
            kiln(env, "models", "promote", name, "1", "production")
        app = os.path.join(tmp, "spin-app")
        kiln(env, "export", "spin", "--out", app, "--router", router, "--vacant", vacant)
        serve_port, spin_port = free_port(), free_port()
        serve = start(env, ["serve", "--cache", "off", "--listen", f"127.0.0.1:{serve_port}"], serve_port,
                      os.path.join(tmp, "serve.log"))
        t = time.perf_counter()
        spin = start(env, ["spin", "up", "--from", os.path.join(app, "spin.toml"), "--listen",
                           f"127.0.0.1:{spin_port}"], spin_port, os.path.join(tmp, "spin.log"))
        spin_start_s = time.perf_counter() - t
        rows = []
        try:
            for name, example in EXAMPLES:
                request = open(os.path.join(MODELS, f"{example}.request.json"), "rb").read()
                req = json.loads(request)
                width = req["inputs"][0]["shape"][1]
                seed = json.dumps({"features": req["inputs"][0]["data"][:width]}).encode()
                for route, path, body in (("OIP infer, 6 rows", f"/v2/models/{name}/infer", request),
                                          ("seed predict, 1 row", f"/v1/models/{name}/predict", seed)):
                    got = {}
                    for host, port in (("serve", serve_port), ("spin", spin_port)):
                        url = f"http://127.0.0.1:{port}{path}"
                        status, answer = post(url, body)
                        assert status == 200, (host, answer)
                        got[host] = measure(url, body, args.seconds)
                        assert got[host]["errors"] == 0, got[host]
                    rows.append((name, route, got["serve"], got["spin"]))
        finally:
            for p in (serve, spin):
                p.kill()
                p.wait()

    print(f"# Kiln's Spin component under `kiln spin up` vs `kiln serve` "
          f"({'wrk -t1 -c1' if use_wrk else 'python client'}, {args.seconds} s per cell), "
          f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores")
    print()
    print(f"router {os.path.getsize(router):,} B, vacant.wasm {os.path.getsize(vacant):,} B; "
          f"`kiln spin up` ready in {spin_start_s:.2f} s (AOT cache warm)")
    print()
    print("| model | route | kiln serve p50 | p99 | Spin component p50 | p99 | added at p50 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, route, s, p in rows:
        print(f"| {name} | {route} | {s['p50_us'] / 1e3:.3f} ms | {s['p99_us'] / 1e3:.3f} ms "
              f"| {p['p50_us'] / 1e3:.3f} ms | {p['p99_us'] / 1e3:.3f} ms "
              f"| {(p['p50_us'] - s['p50_us']) / 1e3:+.3f} ms |")


if __name__ == "__main__":
    sys.exit(main())
