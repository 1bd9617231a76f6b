#!/usr/bin/env python3
"""Request memory (issue 13): how much `kiln serve`'s resident memory grows per byte of
request body in flight.

    cargo build --bin kiln && python3 bench/request_memory.py --kiln-bin target/debug/kiln

Target: a 60 MiB JSON body and 16 concurrent 8 MiB bodies: peak RSS growth <= 3x the bytes
in flight.

The server serves the house-price forest (one FP32 input `X` [N, 10], one output [N, 1]: a
wide input and a small output, so the answer's own size hardly counts) with
`--max-json-mib 64 --max-request-mib 256 --max-body-mib-in-flight 512 --deadline-ms 120000
--request-timeout 300s --cache off`. The bodies are OIP v2 requests of the example request's
rows repeated, with Python's float text (e.g. `431.04931640625`, ~13 bytes per value):

- `json 1 x 60 MiB`: one ~60 MiB body;
- `json 16 x 8 MiB`: 16 ~8 MiB bodies sent at once (one connection each, started
  together);
- `binary ...`: the same tensors with the binary tensor extension
  (`Inference-Header-Content-Length`, raw little-endian FP32, ~4 bytes per value), the
  output asked for as binary too. Bytes in flight are then the (smaller) binary bodies.

Each case runs on a fresh server (so memory kept by the allocator from an earlier case does
not hide growth), after one small request has loaded an instance of the model. The
server's peak is its VmHWM, reset to the current RSS just before the case with
`echo 5 > /proc/PID/clear_refs`; growth = VmHWM - VmRSS at the reset. A thread also polls
VmRSS every 2 ms as a cross-check. The same case is then sent once more on the same server
(`again`): its growth over the RSS the first send left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_load import MODELS_DIR, ROOT, Conn, components, free_port, http_request, machine_note, proc_status, wait_http  # noqa: E402

MIB = 1 << 20


def rows_of_example() -> tuple[str, int, list[list[float]]]:
    t = json.loads((MODELS_DIR / "house_price_forest.request.json").read_text())["inputs"][0]
    w = t["shape"][1]
    return t["name"], w, [t["data"][i * w:(i + 1) * w] for i in range(t["shape"][0])]


def json_body(target_bytes: int) -> tuple[bytes, int]:
    name, w, rows = rows_of_example()
    per_row = len(json.dumps(rows[0])) + 1
    n = max(1, target_bytes // per_row)
    data = [x for i in range(n) for x in rows[i % len(rows)]]
    body = json.dumps({"inputs": [{"name": name, "shape": [n, w], "datatype": "FP32", "data": data}]}).encode()
    return body, n


def binary_body(n: int) -> tuple[bytes, dict]:
    name, w, rows = rows_of_example()
    raw = b"".join(struct.pack(f"<{w}f", *rows[i % len(rows)]) for i in range(n))
    header = json.dumps({"inputs": [{"name": name, "shape": [n, w], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}


def send(port: int, raw: bytes, out: list, i: int, barrier: threading.Barrier | None) -> None:
    c = Conn(port, 600)
    if barrier is not None:
        barrier.wait()
    t0 = time.time()
    status, _, body = c.send(raw)
    out[i] = (status, time.time() - t0, body[:200] if status != 200 else b"")
    c.close()


class RssPoller:
    def __init__(self, pid: int):
        self.pid, self.peak, self.stop = pid, 0, False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self) -> None:
        while not self.stop:
            self.peak = max(self.peak, proc_status(self.pid, "VmRSS"))
            time.sleep(0.002)

    def done(self) -> int:
        self.stop = True
        self.t.join()
        return self.peak


def measure(pid: int, port: int, raws: list[bytes]) -> dict:
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    base = proc_status(pid, "VmRSS")
    poll = RssPoller(pid)
    out: list = [None] * len(raws)
    barrier = threading.Barrier(len(raws)) if len(raws) > 1 else None
    ts = [threading.Thread(target=send, args=(port, r, out, i, barrier)) for i, r in enumerate(raws)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    polled = poll.done()
    hwm = proc_status(pid, "VmHWM")
    inflight = sum(len(r) for r in raws)
    return {"base": base, "hwm": hwm, "polled": polled, "after": proc_status(pid, "VmRSS"), "inflight": inflight,
            "statuses": sorted({o[0] for o in out}), "secs": max(o[1] for o in out),
            "errors": [o[2] for o in out if o[0] != 200][:1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln-bin", default=str(ROOT / "target" / "release" / "kiln"))
    ap.add_argument("--components", default="/tmp/kiln-bench-components")
    ap.add_argument("--big-mib", type=float, default=60)
    ap.add_argument("--small-mib", type=float, default=8)
    ap.add_argument("--concurrent", type=int, default=16)
    ap.add_argument("--cases", default="json-big,json-many,binary-big,binary-many")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    note = machine_note()
    work = Path(tempfile.mkdtemp(prefix="kiln-reqmem-"))
    comp = Path(args.components)
    env = dict(os.environ, KILN_HOME=str(work / "home"), KILN_ACTOR="bench", KILN_CACHE_DIR=str(comp / "aot"))
    env.setdefault("KILN_LOG", "warn")

    def kiln(*a: str) -> str:
        return subprocess.run([args.kiln_bin, *a], env=env, check=True, capture_output=True, text=True).stdout

    wasm = components(args.kiln_bin, ["house_price_forest"], comp, env)
    kiln("models", "register", str(wasm["house_price_forest"]), "--name", "house-price")
    kiln("models", "promote", "house-price", "1", "Production")
    path = "/v2/models/house-price/infer"
    big_json, big_n = json_body(int(args.big_mib * MIB))
    small_json, small_n = json_body(int(args.small_mib * MIB))
    big_bin, bh = binary_body(big_n)
    small_bin, sh = binary_body(small_n)
    jh = {"Content-Type": "application/json"}
    cases = {
        "json-big": (f"json 1 x {len(big_json) / MIB:.1f} MiB ({big_n} rows)", [http_request("POST", path, big_json, jh)]),
        "json-many": (f"json {args.concurrent} x {len(small_json) / MIB:.1f} MiB ({small_n} rows each)",
                      [http_request("POST", path, small_json, jh)] * args.concurrent),
        "binary-big": (f"binary 1 x {len(big_bin) / MIB:.1f} MiB (same tensor)", [http_request("POST", path, big_bin, bh)]),
        "binary-many": (f"binary {args.concurrent} x {len(small_bin) / MIB:.1f} MiB (same tensors)",
                        [http_request("POST", path, small_bin, sh)] * args.concurrent),
    }
    flags = ["--cache", "off", "--max-json-mib", "64", "--max-request-mib", "256", "--max-body-mib-in-flight", "512",
             "--deadline-ms", "120000", "--request-timeout", "300s"]
    small = http_request("POST", path, (MODELS_DIR / "house_price_forest.request.json").read_bytes(), jh)
    results = []
    try:
        for key in args.cases.split(","):
            label, raws = cases[key]
            port = free_port()
            server = subprocess.Popen([args.kiln_bin, "serve", "--listen", f"127.0.0.1:{port}", *flags], env=env,
                                      stdout=open(work / f"serve-{key}.log", "w"), stderr=subprocess.STDOUT)
            try:
                wait_http(port, "/v2/health/ready", 600, server)
                c = Conn(port, 30)
                status, _, body = c.send(small)
                c.close()
                if status != 200:
                    raise SystemExit(f"warm-up request: {status} {body[:300]!r}")
                time.sleep(0.5)
                start_rss = proc_status(server.pid, "VmRSS")
                first = measure(server.pid, port, raws)
                time.sleep(0.5)
                again = measure(server.pid, port, raws)
                results.append((label, start_rss, first, again))
                print(f"{label}: {first}", file=sys.stderr)
            finally:
                server.terminate()
                server.wait()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\n`kiln serve {' '.join(flags)}` (binary {args.kiln_bin}), house-price forest, OIP v2; {note}\n")
    print("| case | bytes in flight | RSS before (after warm-up) | peak RSS growth: VmHWM / polled | growth ÷ bytes in flight | "
          "again on the same server: growth ÷ bytes | statuses | slowest answer | target ≤ 3×? |")
    print("|---|---:|---:|---:|---:|---:|---|---:|:---:|")
    for label, start_rss, f, a in results:
        g = (f["hwm"] - f["base"]) * 1024
        gp = (f["polled"] - f["base"]) * 1024
        ga = (a["hwm"] - a["base"]) * 1024
        ratio = g / f["inflight"]
        status = ", ".join(str(s) for s in f["statuses"]) + (f" {f['errors'][0]!r}" if f["errors"] else "")
        print(f"| {label} | {f['inflight'] / MIB:.1f} MiB | {start_rss / 1024:.0f} MiB | {g / MIB:.0f} / {gp / MIB:.0f} MiB | "
              f"**{ratio:.2f}×** | {ga / a['inflight']:.2f}× | {status} | {f['secs']:.1f} s | {'yes' if ratio <= 3 else 'no'} |")


if __name__ == "__main__":
    main()
