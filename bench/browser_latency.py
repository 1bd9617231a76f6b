#!/usr/bin/env python3
"""Per-inference latency of Kiln's browser package against onnxruntime-web, on the example
MLP and forest, in the same headless Chromium page, offline.

    edge-worker/browser/build.sh && (cd bench/browser && npm ci) \
      && cargo build --release --bin kiln && python3 bench/browser_latency.py

What runs:
  kiln   the browser package (edge-worker/browser: tract in wasm32 + simd128, one thread),
         `KilnModel.predict({input: Float32Array})`, synchronous; loaded from the Kiln
         bundle `kiln compile` embeds in the model's component (digest checked).
  ort    onnxruntime-web (bench/browser/package.json, pinned), wasm backend, one thread,
         SIMD, graphOptimizationLevel "all", `await session.run({input: new ort.Tensor})`,
         on the same ONNX file.
Both run in one page served from 127.0.0.1 with COOP/COEP headers (crossOriginIsolated:
the finest performance.now()). Each sample times k back-to-back calls (k such that a sample
lasts >= --min-sample-ms) and records the mean per call; the two engines alternate for
--rounds rounds. Before timing, both engines' outputs are compared with onnxruntime's
reference outputs (examples/*.expected.json). The table prints median and p90 per call.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import hashlib
import http.server
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "examples" / "models"
BENCH_DIR = ROOT / "bench" / "browser"
PKG_DIR = ROOT / "target" / "wasm-js" / "kiln-web"
ORT_DIST = BENCH_DIR / "node_modules" / "onnxruntime-web" / "dist"
MODELS = [("mlp", "mlp"), ("house_price_forest", "forest")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kiln_bin() -> Path:
    """The newest `kiln` built here (it only compiles the two models: debug is fine)."""
    built = [p for p in (ROOT / "target" / d / "kiln" for d in ("release", "debug")) if p.exists()]
    if not built:
        sys.exit("no kiln binary: cargo build --release --bin kiln")
    return max(built, key=lambda p: p.stat().st_mtime)


def read_leb(b: bytes, pos: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        byte = b[pos]
        pos += 1
        v |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return v, pos


def bundle_of(component: bytes) -> bytes:
    """The `kiln-bundle` custom section of a component (what `kiln serve` hands browsers)."""
    pos = 8
    while pos < len(component):
        sid = component[pos]
        size, pos = read_leb(component, pos + 1)
        end = pos + size
        if sid == 0:
            n, p = read_leb(component, pos)
            if component[p : p + n] == b"kiln-bundle":
                return component[p + n : end]
        pos = end
    sys.exit("the component carries no kiln-bundle section: rebuild kiln")


def compile_bundles(work: Path) -> list[dict]:
    models = []
    for example, name in MODELS:
        out = work / f"{name}.wasm"
        subprocess.run(
            [str(kiln_bin()), "compile", str(MODELS_DIR / f"{example}.onnx"), "--name", name, "-o", str(out)],
            check=True,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "KILN_HOME": str(work / "home")},
        )
        bundle = bundle_of(out.read_bytes())
        (work / f"{name}.bundle").write_bytes(bundle)
        shutil.copy(MODELS_DIR / f"{example}.onnx", work / f"{name}.onnx")
        request = json.loads((MODELS_DIR / f"{example}.request.json").read_text())["inputs"][0]
        expected = json.loads((MODELS_DIR / f"{example}.expected.json").read_text())["outputs"]
        models.append(
            {
                "name": name,
                "bundle": f"/models/{name}.bundle",
                "sha256": hashlib.sha256(bundle).hexdigest(),
                "onnx": f"/models/{name}.onnx",
                "input": request["name"],
                "data": request["data"],
                "shape": request["shape"],
                "expected": {o["name"]: o["data"] for o in expected},
                "bundle_bytes": len(bundle),
            }
        )
    return models


class Handler(http.server.SimpleHTTPRequestHandler):
    """Static files from a few roots, cross-origin isolated, quiet."""

    roots: dict[str, Path] = {}
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".wasm": "application/wasm",
        ".mjs": "text/javascript",
        ".js": "text/javascript",
    }

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0]
        for prefix, root in self.roots.items():
            if path.startswith(prefix):
                rel = path[len(prefix) :].lstrip("/")
                target = (root / rel).resolve()
                if root.resolve() in target.parents or target == root.resolve():
                    return str(target)
        return str(Path("/nonexistent"))

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, *args) -> None:
        pass


class WebDriver:
    """chromedriver's W3C HTTP API, just enough to open a page and run a script."""

    def __init__(self, chromium: str, chromedriver: str, profile: Path):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [chromedriver, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(300):
            try:
                self.call("GET", "/status")
                break
            except OSError:
                time.sleep(0.05)
        args = [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
        ]
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome", "goog:chromeOptions": {"binary": chromium, "args": args}}}}
        self.session = self.call("POST", "/session", caps)["sessionId"]
        self.call("POST", f"/session/{self.session}/timeouts", {"script": 3_600_000})

    def call(self, method: str, path: str, body=None):
        data = json.dumps(body if body is not None else {}).encode() if method == "POST" else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=3600) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"WebDriver {method} {path}: {e.read().decode(errors='replace')}") from None

    def close(self) -> None:
        try:
            self.call("DELETE", f"/session/{self.session}")
        finally:
            self.proc.kill()
            self.proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--samples", type=int, default=30, help="samples per round and engine")
    ap.add_argument("--warmup", type=int, default=200, help="calls before timing")
    ap.add_argument("--min-sample-ms", type=float, default=2.0)
    ap.add_argument("--batches", default="1,6", help="rows per inference (the example requests have 6)")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    args = ap.parse_args()

    for need, hint in [
        (PKG_DIR / "kiln_web_bg.wasm", "edge-worker/browser/build.sh"),
        (ORT_DIST / "ort.wasm.min.mjs", "(cd bench/browser && npm ci)"),
    ]:
        if not need.exists():
            sys.exit(f"missing {need}: run {hint}")

    work = Path(tempfile.mkdtemp(prefix="kiln-browser-bench-"))
    server = driver = None
    try:
        models = compile_bundles(work)
        Handler.roots = {"/kiln-web/": PKG_DIR, "/ort/": ORT_DIST, "/models/": work, "/": BENCH_DIR}
        server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        driver = WebDriver(args.chromium, args.chromedriver, work / "profile")
        driver.call("POST", f"/session/{driver.session}/url",
                    {"url": f"http://127.0.0.1:{server.server_port}/bench.html"})
        config = {
            "models": [{k: v for k, v in m.items() if k != "bundle_bytes"} for m in models],
            "batches": [int(b) for b in args.batches.split(",")],
            "rounds": args.rounds, "samples": args.samples, "warmup": args.warmup,
            "minSampleMs": args.min_sample_ms,
        }
        script = ("const done = arguments[1]; (async () => { for (let i = 0; i < 100 && !window.runBench; i++)"
                  " await new Promise((r) => setTimeout(r, 50)); return await window.runBench(arguments[0]); })()"
                  ".then((v) => done({ok: v}), (e) => done({err: String(e && e.stack || e)}));")
        out = driver.call("POST", f"/session/{driver.session}/execute/async", {"script": script, "args": [config]})
        if "err" in out:
            sys.exit(f"the bench page failed: {out['err']}")
        report = out["ok"]
    finally:
        if driver:
            driver.close()
        if server:
            server.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"# Kiln browser package vs onnxruntime-web {report['ort'].get('web', '?')} "
          f"({datetime.date.today()}, {platform.machine()}, {cpu}, {os.cpu_count()} cores)")
    print(f"# {report['userAgent']}; crossOriginIsolated={report['crossOriginIsolated']}; one thread each")
    print(f"# bundles: " + ", ".join(f"{m['name']} {m['bundle_bytes'] / 1024:.0f} KiB" for m in models)
          + f"; kiln_web_bg.wasm {(PKG_DIR / 'kiln_web_bg.wasm').stat().st_size / 2**20:.1f} MiB")
    print()
    print(f"| model | rows | Kiln median µs | Kiln p90 µs | ort-web median µs | ort-web p90 µs | Kiln ≤ ort-web | max rel. diff vs onnxruntime |")
    print("|---|---|---|---|---|---|---|---|")
    for r in report["results"]:
        k, o = r["kiln"], r["ort"]
        diff = max(r["check"].values()) if r["check"] else float("nan")
        if "error" in o:
            print(f"| {r['model']} | {r['batch']} | {k['median']:.1f} | {k['p90']:.1f} | n/a | n/a | "
                  f"ort-web failed: {o['error'][:80]} | {diff:.1e} |")
        else:
            ok = "yes" if k["median"] <= o["median"] else "**no**"
            print(f"| {r['model']} | {r['batch']} | {k['median']:.1f} | {k['p90']:.1f} | {o['median']:.1f} | "
                  f"{o['p90']:.1f} | {ok} | {diff:.1e} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
