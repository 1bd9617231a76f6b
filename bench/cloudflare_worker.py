#!/usr/bin/env python3
"""Kiln's Cloudflare Worker under workerd: per-request latency for the MLP and the house-price
forest, the deployment's size (script + wasm + bundles, raw and gzipped) and workerd's
memory with each model loaded.

    bash edge-worker/cloudflare/build.sh && python3 bench/cloudflare_worker.py [--seconds 10]

Setup: the Worker built by build.sh (release, simd128), each example model deployed alone as a
Kiln bundle (KILNMDL1 + config JSON + the ONNX bytes, the format `kiln export cloudflare`
writes) with its SHA-256 in KILN_MODELS, in a fresh `workerd serve` (the npm package's
binary, the runtime `wrangler dev` uses) on 127.0.0.1. Load: `wrk` with one connection
(requests one after another: latency, not throughput) posting the example's OIP v2 infer
request (6 rows) and a one-row seed predict request; falls back to a Python client without
wrk. Memory: workerd's RSS once started (no model loaded: the model loads on the first
request, once per isolate), after the first request, and after the run; the growth is the
isolate's cost of the model (an upper bound: RSS also counts workerd's own allocations).
The Worker itself logs its wasm linear memory (at load and whenever it grows): that and the
bundle's ArrayBuffer are what counts against an isolate's 128 MB.

--dense-mib: also deploys synthetic dense models (a two-layer MLP, 256 inputs, float32
weights of about N MiB, made with the onnx package) to see which model sizes fit.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
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
WORKER = os.path.join(ROOT, "edge-worker", "cloudflare")
BUILD = os.path.join(WORKER, "build")
WORKERD = os.path.join(WORKER, "node_modules", "@cloudflare", "workerd-linux-64", "bin", "workerd")
MODELS = os.path.join(ROOT, "examples", "models")


def bundle(name: str, version: int, onnx: bytes) -> bytes:
    config = json.dumps({"options": {"name": name, "version": str(version), "input_shapes": {}}},
                        separators=(",", ":")).encode()
    return b"KILNMDL1" + len(config).to_bytes(4, "little") + config + onnx


def dense_onnx(mib: int) -> bytes:
    """A 256 -> H -> 8 MLP whose float32 weights take about `mib` MiB."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    hidden = max(1, (mib << 20) // 4 // (256 + 8))
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((256, hidden), dtype=np.float32) * 0.01, "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((hidden, 8), dtype=np.float32) * 0.01, "w2")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])],
        f"dense{mib}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        initializer=[w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def deploy(tmp: str, name: str, data: bytes) -> tuple[subprocess.Popen, int]:
    models = os.path.join(tmp, "models")
    os.makedirs(models, exist_ok=True)
    # workerd embeds files relative to its config.
    os.makedirs(os.path.join(tmp, "worker"), exist_ok=True)
    for f in ("shim.mjs", "index.wasm"):
        os.symlink(os.path.join(BUILD, f), os.path.join(tmp, "worker", f))
    file = f"{name}.v1.kmdl"
    with open(os.path.join(models, file), "wb") as f:
        f.write(data)
    with open(os.path.join(models, "kiln-models.mjs"), "w") as f:
        f.write(f'import b0 from "./{file}";\nexport const BUNDLES = {{ "{file}": b0 }};\n')
    port = free_port()
    sha = hashlib.sha256(data).hexdigest()
    config = f'''using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "kiln", worker = .kiln) ],
  sockets = [ (name = "http", address = "127.0.0.1:{port}", http = (), service = "kiln") ],
);
const kiln :Workerd.Worker = (
  modules = [
    (name = "worker/shim.mjs", esModule = embed "worker/shim.mjs"),
    (name = "worker/index.wasm", wasm = embed "worker/index.wasm"),
    (name = "models/kiln-models.mjs", esModule = embed "models/kiln-models.mjs"),
    (name = "models/{file}", data = embed "models/{file}"),
  ],
  bindings = [ (name = "KILN_MODELS", text = "{name}@1={sha}") ],
  compatibilityDate = "2026-04-01",
);
'''
    path = os.path.join(tmp, "kiln.capnp")
    with open(path, "w") as f:
        f.write(config)
    log = open(os.path.join(tmp, "workerd.log"), "w")
    proc = subprocess.Popen([WORKERD, "serve", path, "--verbose"], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("workerd did not start")


def wasm_memory_mib(tmp: str) -> float:
    """The largest wasm memory size the Worker logged (it logs at load and on growth)."""
    sizes = [0.0]
    with open(os.path.join(tmp, "workerd.log")) as f:
        for line in f:
            if "kiln:" in line and "wasm memory" in line:
                sizes.append(float(line.rsplit("memory", 1)[1].split()[-2]))
    return max(sizes)


def post(url: str, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wrk_latency(url: str, body: bytes, seconds: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write('wrk.method = "POST"\nwrk.headers["content-type"] = "application/json"\n')
        f.write(f"wrk.body = {json.dumps(body.decode())}\n")
        f.write("done = function(summary, latency, requests)\n"
                "  io.write(string.format('KILN %d %d %.1f %.1f %.1f %.1f\\n', summary.requests,"
                " summary.errors.status, latency:percentile(50), latency:percentile(90),"
                " latency:percentile(99), latency.mean))\nend\n")
        script = f.name
    try:
        out = subprocess.run(["wrk", "-t1", "-c1", f"-d{seconds}s", "-s", script, url],
                             capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script)
    line = next(l for l in out.splitlines() if l.startswith("KILN "))
    n, errors, p50, p90, p99, mean = line.split()[1:]
    return {"requests": int(n), "errors": int(errors), "p50_us": float(p50), "p90_us": float(p90),
            "p99_us": float(p99), "mean_us": float(mean)}


def python_latency(url: str, body: bytes, seconds: int) -> dict:
    times = []
    end = time.time() + seconds
    while time.time() < end:
        t = time.perf_counter()
        status, _ = post(url, body)
        times.append((time.perf_counter() - t) * 1e6)
        assert status == 200, status
    times.sort()
    q = lambda p: times[min(len(times) - 1, int(p * len(times)))]
    return {"requests": len(times), "errors": 0, "p50_us": q(0.5), "p90_us": q(0.9), "p99_us": q(0.99),
            "mean_us": sum(times) / len(times)}


def gz(data: bytes) -> int:
    return len(gzip.compress(data, 9))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--dense-mib", default="", help="comma-separated sizes of synthetic dense models")
    args = ap.parse_args()
    for f in ("shim.mjs", "index.wasm"):
        if not os.path.exists(os.path.join(BUILD, f)):
            raise SystemExit(f"{BUILD}/{f} missing: run bash edge-worker/cloudflare/build.sh")
    if not os.path.exists(WORKERD):
        raise SystemExit("workerd missing: run npm ci in edge-worker/cloudflare")
    use_wrk = shutil.which("wrk") is not None
    script = open(os.path.join(BUILD, "shim.mjs"), "rb").read()
    wasm = open(os.path.join(BUILD, "index.wasm"), "rb").read()

    print(f"# Kiln Cloudflare Worker under workerd ({'wrk -t1 -c1' if use_wrk else 'python client'}, "
          f"{args.seconds} s per row), {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores")
    print()
    print("| deployment | raw | gzip -9 |")
    print("|---|---:|---:|")
    print(f"| script (shim.mjs) | {len(script):,} B | {gz(script):,} B |")
    print(f"| engine (index.wasm) | {len(wasm):,} B | {gz(wasm):,} B |")
    rows = []
    for example in ("mlp", "house_price_forest"):
        onnx = open(os.path.join(MODELS, f"{example}.onnx"), "rb").read()
        data = bundle(example, 1, onnx)
        print(f"| bundle {example} | {len(data):,} B | {gz(data):,} B |")
        total = script + wasm + data
        print(f"| **Worker + {example}** | **{len(total):,} B** | **{gz(script) + gz(wasm) + gz(data):,} B** |")
        request = open(os.path.join(MODELS, f"{example}.request.json"), "rb").read()
        req = json.loads(request)
        width = req["inputs"][0]["shape"][1]
        seed = json.dumps({"features": req["inputs"][0]["data"][:width]}).encode()
        with tempfile.TemporaryDirectory() as tmp:
            proc, port = deploy(tmp, example, data)
            try:
                idle = rss_kib(proc.pid)
                base = f"http://127.0.0.1:{port}"
                t = time.perf_counter()
                status, body = post(f"{base}/v2/models/{example}/infer", request)
                first_ms = (time.perf_counter() - t) * 1e3
                assert status == 200, body
                loaded = rss_kib(proc.pid)
                measure = wrk_latency if use_wrk else python_latency
                infer = measure(f"{base}/v2/models/{example}/infer", request, args.seconds)
                status, body = post(f"{base}/v1/models/{example}/predict", seed)
                assert status == 200, body
                predict = measure(f"{base}/v1/models/{example}/predict", seed, args.seconds)
                after = rss_kib(proc.pid)
            finally:
                proc.kill()
                proc.wait()
            wasm_mib = wasm_memory_mib(tmp)
        rows.append((example, first_ms, infer, predict, idle, loaded, after, wasm_mib))

    print()
    print("| model | first request (load + run) | route | requests | p50 | p90 | p99 | mean |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for example, first_ms, infer, predict, *_ in rows:
        for route, r in (("OIP infer, 6 rows", infer), ("seed predict, 1 row", predict)):
            assert r["errors"] == 0, r
            print(f"| {example} | {first_ms:.0f} ms | {route} | {r['requests']} | {r['p50_us'] / 1e3:.3f} ms "
                  f"| {r['p90_us'] / 1e3:.3f} ms | {r['p99_us'] / 1e3:.3f} ms | {r['mean_us'] / 1e3:.3f} ms |")
    print()
    print("| model | wasm memory (peak) | workerd RSS started | after first request | after the runs |")
    print("|---|---:|---:|---:|---:|")
    for example, _, _, _, idle, loaded, after, wasm_mib in rows:
        print(f"| {example} | {wasm_mib:.1f} MiB | {idle / 1024:.1f} MiB | {loaded / 1024:.1f} MiB "
              f"| {after / 1024:.1f} MiB |")

    dense = [int(x) for x in args.dense_mib.split(",") if x.strip()]
    if dense:
        print()
        print("| synthetic dense model | ONNX | bundle gzip -9 | first request | wasm memory (peak) | workerd RSS after |")
        print("|---|---:|---:|---:|---:|---:|")
    for mib in dense:
        onnx = dense_onnx(mib)
        data = bundle("dense", 1, onnx)
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 256], "datatype": "FP32",
                                       "data": [0.5] * 256}]}).encode()
        with tempfile.TemporaryDirectory() as tmp:
            proc, port = deploy(tmp, "dense", data)
            try:
                t = time.perf_counter()
                status, answer = post(f"http://127.0.0.1:{port}/v2/models/dense/infer", body)
                first_ms = (time.perf_counter() - t) * 1e3
                after = rss_kib(proc.pid)
            finally:
                proc.kill()
                proc.wait()
            wasm_mib = wasm_memory_mib(tmp)
        result = f"{first_ms:.0f} ms" if status == 200 else f"HTTP {status}: {answer[:80]!r}"
        print(f"| {mib} MiB of weights | {len(onnx) / 2**20:.1f} MiB | {gz(data) / 2**20:.1f} MiB | {result} "
              f"| {wasm_mib:.1f} MiB | {after / 1024:.0f} MiB |")


if __name__ == "__main__":
    sys.exit(main())
