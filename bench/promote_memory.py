#!/usr/bin/env python3
"""Memory across promotes: one `kiln serve --cache off` on a local registry whose `mlp` has three
versions (the same model compiled with three version labels); every `--interval` seconds the next
one is promoted to Production (the previous one is archived and unloaded), under a light load
of seed requests. Prints the server's RSS after every swap.

    cargo build --bin kiln && python3 bench/promote_memory.py --kiln-bin target/debug/kiln

What it shows: whether an unloaded version's memory goes back to the operating system (RSS
flat after the first swaps) or stays (RSS growing with every swap). With `--cold-aot` the server
starts on an empty AOT cache, so each of the first loads of v1, v2 and v3 compiles the component
with Cranelift in the server (as a managed node does for every pushed version): the RSS after
those swaps against the later, cached ones is what a compile leaves behind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_load import (  # noqa: E402
    ROOT, Target, components, free_port, http_request, machine_note, proc_status, run_load, seed_body, wait_http,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln-bin", default=str(ROOT / "target" / "release" / "kiln"))
    ap.add_argument("--components", default="/tmp/kiln-bench-components")
    ap.add_argument("--interval", type=float, default=5, help="seconds between promotes")
    ap.add_argument("--seconds", type=float, default=150)
    ap.add_argument("--rate", type=float, default=1500, help="requests/s of the background load")
    ap.add_argument("--cold-aot", action="store_true",
                    help="serve from an empty AOT cache: the first load of each version compiles in the server")
    ap.add_argument("--serve-args", default="", help="extra `kiln serve` flags, e.g. '--isolation per-request'")
    args = ap.parse_args()
    note = machine_note()
    work = Path(tempfile.mkdtemp(prefix="kiln-promote-memory-"))
    comp = Path(args.components)
    env = dict(os.environ, KILN_HOME=str(work / "home"), KILN_ACTOR="bench", KILN_CACHE_DIR=str(comp / "aot"))
    env.setdefault("KILN_LOG", "warn")

    def kiln(*a: str) -> str:
        return subprocess.run([args.kiln_bin, *a], env=env, check=True, capture_output=True, text=True).stdout

    wasm = components(args.kiln_bin, ["mlp", "mlp@2", "mlp@3"], comp, env)
    for m in ["mlp", "mlp@2", "mlp@3"]:
        kiln("models", "register", str(wasm[m]), "--name", "mlp")
    kiln("models", "promote", "mlp", "1", "Production")
    port = free_port()
    serve_env = dict(env, KILN_CACHE_DIR=str(work / "aot")) if args.cold_aot else env
    server = subprocess.Popen([args.kiln_bin, "serve", "--listen", f"127.0.0.1:{port}", "--cache", "off", *args.serve_args.split()],
                              env=serve_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    stop = threading.Event()
    try:
        wait_http(port, "/v2/health/ready", 600, server)
        target = [Target("mlp", port, http_request("POST", "/v1/models/mlp/predict", seed_body("mlp"),
                                                   {"Content-Type": "application/json"}))]

        def load() -> None:
            while not stop.is_set():
                run_load(target, 2, 4, rate=args.rate)

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        time.sleep(args.interval)
        rows.append((0, "-", proc_status(server.pid, "VmRSS") / 1024))
        t0 = time.time()
        version = 1
        swap = 0
        while time.time() - t0 < args.seconds:
            version = version % 3 + 1
            swap += 1
            kiln("models", "promote", "mlp", str(version), "Production")
            time.sleep(args.interval)
            rows.append((swap, f"v{version}", proc_status(server.pid, "VmRSS") / 1024))
        stop.set()
        loader.join()
    finally:
        stop.set()
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    cold = ", empty AOT cache at the start (the first load of each version compiles)" if args.cold_aot else ""
    print(f"\n`kiln serve --cache off {args.serve_args}` (binary {args.kiln_bin}{cold}), mlp v1..v3 promoted in turn every "
          f"{args.interval:g} s for {args.seconds:g} s under {args.rate:g} req/s; {note}\n")
    print("| swap | Production | RSS MiB |")
    print("|---:|---|---:|")
    for swap, v, rss in rows:
        print(f"| {swap} | {v} | {rss:.0f} |")
    first, last = rows[0][2], rows[-1][2]
    half = rows[len(rows) // 2][2]
    print(f"\nRSS {first:.0f} -> {last:.0f} MiB over {len(rows) - 1} swaps; second half: {half:.0f} -> {last:.0f} MiB "
          f"({(last - half) / max(1, len(rows) - 1 - len(rows) // 2):+.2f} MiB per swap)")


if __name__ == "__main__":
    main()
