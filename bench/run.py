#!/usr/bin/env python3
"""Kiln against the seed's design (FastAPI + uvicorn + onnxruntime), same JSON API, same
load tool, same machine, in one run.

    cargo build --release --bin kiln && python3 bench/run.py

Servers (all started before the first measurement and kept up, so that the rows of one
model and concurrency are measured back to back, in the same conditions):
  seed         bench/seed_server.py, one process per model, `--seed-workers` uvicorn workers
  kiln         `kiln up --cache off`: every request runs the model in its sandbox
  kiln-cached  `kiln up --cache memory`: the identical body is answered from the
               prediction cache after the first request

Rows for `--models` POST the seed API body {"features": [...]} to /v1/models/{name}/predict.
Rows for `--oip-models` (default the example CNN, whose run dominates the request, unlike
the tiny forest and MLP) POST an Open Inference Protocol v2 body to /v2/models/{name}/infer
on all three servers (seed_server.py has the seed's design extended with that endpoint);
they are labelled `<model> (oip)`. `kiln up` serves only its bundled examples, so the
runner registers and promotes each OIP model in the kiln home before starting kiln.

The load tool is wrk (closed loop: each connection sends its next request when the previous
answer arrives) with a Lua script that POSTs one body. The uncached Kiln row uses the same
identical body as the cached one, with the cache switched off in the server, so the only
difference between the two rows is the cache.

Everything (load tool, servers, the rest of the machine) shares the same cores; see the
header the script prints.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "examples" / "models"
SERVERS = ("seed", "kiln", "kiln-cached")
# The names `kiln up` serves the bundled examples under (runtime/cli/src/bootstrap.rs), by
# example file; other models keep their file name.
KILN_NAMES = {"house_price_forest": "house-price", "iris_logreg": "iris", "mlp": "mlp"}

LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%(body)s]==]

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'KILN_BENCH {"requests": %%d, "duration_us": %%d, "connect": %%d, "read": %%d, ' ..
    '"write": %%d, "status": %%d, "timeout": %%d, "p50_us": %%d, "p99_us": %%d, ' ..
    '"mean_us": %%f, "max_us": %%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
"""


@dataclass
class Result:
    model: str
    concurrency: int
    server: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int


@dataclass
class Workload:
    """One row group: a model file, the endpoint it is posted to and the body."""

    label: str  # in the tables: the file name, or "<file> (oip)"
    file: str  # example file name (examples/models/<file>.onnx)
    oip: bool  # /v2/models/{name}/infer instead of /v1/models/{name}/predict
    body: bytes


@dataclass
class Server:
    name: str
    base_url: str
    proc: subprocess.Popen
    log: Path
    # Example file name -> the name in the server's URL.
    names: dict[str, str] = field(default_factory=dict)

    def url(self, w: Workload) -> str:
        name = self.names.get(w.file, w.file)
        if w.oip:
            return f"{self.base_url}/v2/models/{name}/infer"
        return f"{self.base_url}/v1/models/{name}/predict"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_row_body(model: str) -> bytes:
    """A valid single-row seed body from the first row of the model's example request."""
    request = json.loads((MODELS_DIR / f"{model}.request.json").read_text())
    tensor = request["inputs"][0]
    shape = tensor["shape"]
    if len(shape) != 2:
        raise SystemExit(f"{model}: the seed API needs an [N, F] input, the example has {shape}")
    width = shape[1]
    return json.dumps({"features": tensor["data"][:width]}).encode()


def first_row_oip_body(model: str) -> bytes:
    """A single-row OIP v2 body: the first row (batch index 0) of every input of the
    model's example request."""
    request = json.loads((MODELS_DIR / f"{model}.request.json").read_text())
    inputs = []
    for tensor in request["inputs"]:
        shape = [1, *tensor["shape"][1:]]
        size = 1
        for d in shape:
            size *= d
        inputs.append(
            {"name": tensor["name"], "shape": shape, "datatype": tensor["datatype"], "data": tensor["data"][:size]}
        )
    return json.dumps({"inputs": inputs}).encode()


def post(url: str, body: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def check_response(server: str, w: Workload, url: str) -> None:
    model = w.label
    status, reply = post(url, w.body)
    if status != 200:
        raise SystemExit(f"{server}/{model}: HTTP {status}: {reply[:500]!r}")
    doc = json.loads(reply)
    if w.oip:
        outputs = doc.get("outputs")
        if not isinstance(outputs, list) or not outputs:
            raise SystemExit(f"{server}/{model}: response has no outputs list: {str(doc)[:500]}")
        return
    missing = {"prediction", "confidence", "model_version", "request_id", "timestamp", "processing_time"} - set(doc)
    if missing:
        raise SystemExit(f"{server}/{model}: response lacks {sorted(missing)}: {doc}")


def start(cmd: list[str], log: Path, ready_line: Optional[str], env: Optional[dict] = None) -> subprocess.Popen:
    """Starts `cmd` in its own process group, its output appended to `log`; when
    `ready_line` is given, returns once a line of stdout contains it."""
    out = log.open("ab")
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=out,
        env=env,
        start_new_session=True,
    )
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            out.flush()
            if ready_line and ready_line in line.decode(errors="replace"):
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    proc._kiln_ready = ready  # type: ignore[attr-defined]
    return proc


def wait_ready(proc: subprocess.Popen, what: str, log: Path, timeout: float, probe=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}; its log ({log}):\n{tail(log)}")
        if probe is None and proc._kiln_ready.is_set():  # type: ignore[attr-defined]
            return
        if probe is not None:
            try:
                if probe():
                    return
            except OSError:
                pass
        time.sleep(0.2)
    stop(proc)
    raise SystemExit(f"{what} was not ready within {timeout:.0f} s; its log ({log}):\n{tail(log)}")


def tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def pinned(cmd: list[str], cpus: Optional[str]) -> list[str]:
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


def start_seed(model: str, args, work: Path) -> Server:
    port = free_port()
    log = work / f"seed-{model}.log"
    cmd = pinned(
        [
            sys.executable,
            str(ROOT / "bench" / "seed_server.py"),
            "--model", str(MODELS_DIR / f"{model}.onnx"),
            "--name", model,
            "--port", str(port),
            "--workers", str(args.seed_workers),
        ],
        args.pin_servers,
    )
    proc = start(cmd, log, None)
    base = f"http://127.0.0.1:{port}"
    wait_ready(
        proc,
        f"seed server for {model}",
        log,
        60,
        probe=lambda: urllib.request.urlopen(f"{base}/health", timeout=1).status == 200,
    )
    return Server("seed", base, proc, log)


def register_kiln_model(model: str, name: str, args, home: Path, work: Path) -> None:
    """Registers examples/models/<model>.onnx (compiling it) as `name` in the kiln home and
    promotes that version to Production, so that `kiln up` serves it."""
    env = dict(os.environ, KILN_HOME=str(home))
    env.setdefault("KILN_LOG", "warn")
    log = work / f"register-{name}.log"

    def kiln(*cmd: str) -> str:
        with log.open("ab") as err:
            run = subprocess.run([str(args.kiln_bin), *cmd], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err)
        if run.returncode != 0:
            raise SystemExit(f"kiln {' '.join(cmd)} failed ({run.returncode}); its log ({log}):\n{tail(log)}")
        return run.stdout.decode(errors="replace")

    print(f"registering {model} as {name} in the kiln home (compiles it)", file=sys.stderr)
    out = kiln("models", "register", str(MODELS_DIR / f"{model}.onnx"), "--name", name, "--json")
    try:
        version = json.loads(out)["version"]
    except (ValueError, KeyError, TypeError):
        raise SystemExit(f"kiln models register printed no version: {out[:500]}")
    kiln("models", "promote", name, str(version), "Production")


def start_kiln(name: str, cache: str, args, home: Path, work: Path) -> Server:
    port = free_port()
    log = work / f"{name}.log"
    cmd = pinned(
        [
            str(args.kiln_bin),
            "up",
            "--home", str(home),
            "--listen", f"127.0.0.1:{port}",
            "--cache", cache,
        ],
        args.pin_servers,
    )
    env = dict(os.environ)
    env.setdefault("KILN_LOG", "warn")
    proc = start(cmd, log, "ready", env)
    wait_ready(proc, f"kiln ({name})", log, args.startup_timeout)
    return Server(name, f"http://127.0.0.1:{port}", proc, log, dict(args.kiln_names))


def wrk(url: str, body: bytes, concurrency: int, seconds: float, args, work: Path) -> dict:
    script = work / "post.lua"
    script.write_text(LUA % {"body": body.decode()})
    threads = max(1, min(args.wrk_threads, concurrency))
    cmd = pinned(
        [
            "wrk",
            "-t", str(threads),
            "-c", str(concurrency),
            "-d", f"{max(1, round(seconds))}s",
            "--timeout", "5s",
            "-s", str(script),
            url,
        ],
        args.pin_load,
    )
    run = subprocess.run(cmd, capture_output=True, text=True)
    for line in run.stdout.splitlines():
        if line.startswith("KILN_BENCH "):
            return json.loads(line[len("KILN_BENCH "):])
    raise SystemExit(f"wrk failed ({run.returncode}): {run.stdout}\n{run.stderr}")


def measure(server: Server, w: Workload, concurrency: int, args, work: Path) -> Result:
    url = server.url(w)
    if args.warmup > 0:
        wrk(url, w.body, concurrency, args.warmup, args, work)
    stats = wrk(url, w.body, concurrency, args.duration, args, work)
    # wrk counts responses with status >= 400 under "status"; the servers send no 1xx/3xx.
    errors = sum(stats[k] for k in ("connect", "read", "write", "status", "timeout"))
    seconds = stats["duration_us"] / 1e6
    return Result(
        model=w.label,
        concurrency=concurrency,
        server=server.name,
        rps=stats["requests"] / seconds if seconds else 0.0,
        p50_ms=stats["p50_us"] / 1000,
        p99_ms=stats["p99_us"] / 1000,
        errors=errors,
        requests=stats["requests"],
    )


def machine_header(args) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = args.load_at_start
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()
    pins = (
        f"servers pinned to CPUs {args.pin_servers or 'any'}, wrk to {args.pin_load or 'any'}"
    )
    return "\n".join(
        [
            f"# Kiln vs. seed (FastAPI + uvicorn + onnxruntime), {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
            "",
            f"- machine: {cpu}, {os.cpu_count()} cores, load average at start {load[0]:.2f}; "
            "the load tool, the servers and everything else on the machine share these cores "
            f"({pins}), so absolute figures are lower than on a dedicated server and both "
            "servers pay the same tax",
            f"- load: {wrk_version[0].split(' Copyright')[0] if wrk_version else 'wrk'}, closed loop, "
            f"`wrk -t min({args.wrk_threads},c) -c c -d {args.duration:g}s` after a {args.warmup:g} s warm-up, "
            "one identical single-row body per model (first row of "
            "examples/models/<model>.request.json): `{\"features\": [...]}` to /v1/models/<name>/predict, "
            "or for `<model> (oip)` rows an OIP v2 `{\"inputs\": [...]}` to /v2/models/<name>/infer; "
            "keep-alive, loopback",
            f"- seed: bench/seed_server.py, uvicorn {args.seed_workers} worker(s), onnxruntime 1 intra-op thread per worker; "
            "kiln: `kiln up --cache off`; kiln-cached: `kiln up --cache memory` (identical body → cache hits)",
            "- errors: connection/read/write errors, timeouts (5 s) and non-2xx responses",
        ]
    )


def table(results: list[Result]) -> str:
    lines = [
        "| model | concurrency | server | requests/s | p50 ms | p99 ms | errors |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.concurrency} | {r.server} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} |"
        )
    return "\n".join(lines)


def comparisons(results: list[Result]) -> str:
    by = {(r.model, r.concurrency, r.server): r for r in results}
    keys = list(dict.fromkeys((r.model, r.concurrency) for r in results))  # measurement order
    out = []
    kiln_vs_seed = [
        "| model | concurrency | kiln ÷ seed requests/s | p99 kiln / seed ms |",
        "|---|---:|---:|---|",
    ]
    cache = [
        "| model | concurrency | kiln-cached ÷ kiln requests/s | target ≥ 2× | p99 cached / uncached ms |",
        "|---|---:|---:|---|---|",
    ]
    for model, c in keys:
        seed, kiln, cached = (by.get((model, c, s)) for s in SERVERS)
        if seed and kiln and seed.rps:
            kiln_vs_seed.append(
                f"| {model} | {c} | {kiln.rps / seed.rps:.2f}× | {kiln.p99_ms:.2f} / {seed.p99_ms:.2f} |"
            )
        if kiln and cached and kiln.rps:
            ratio = cached.rps / kiln.rps
            cache.append(
                f"| {model} | {c} | {ratio:.2f}× | {'met' if ratio >= 2 else 'NOT met'} | {cached.p99_ms:.2f} / {kiln.p99_ms:.2f} |"
            )
    if len(kiln_vs_seed) > 2:
        out += ["## Kiln (uncached) vs. seed", "", *kiln_vs_seed, ""]
    if len(cache) > 2:
        out += [
            "## Kiln prediction cache: cached vs. uncached",
            "",
            "Same identical body in both rows; the uncached server runs with `--cache off`, so "
            "the difference is the cache lookup answering instead of the sandboxed model.",
            "",
            *cache,
            "",
        ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Benchmark Kiln against the seed's FastAPI + onnxruntime design",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--kiln-bin", type=Path, default=ROOT / "target" / "release" / "kiln")
    parser.add_argument("--models", default="house_price_forest,mlp", help="comma-separated example model names")
    parser.add_argument(
        "--oip-models",
        default="cnn",
        help="comma-separated example models measured on the OIP v2 endpoint /v2/models/{name}/infer "
        "(rows `<model> (oip)`; empty disables); kiln gets them registered and promoted in its home",
    )
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated connection counts")
    parser.add_argument("--duration", type=float, default=10, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of discarded load before each measurement")
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="which of seed, kiln, kiln-cached to measure (e.g. `seed` without a kiln binary)",
    )
    parser.add_argument("--seed-workers", type=int, default=2, help="uvicorn workers of the seed server")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (at most the concurrency)")
    parser.add_argument("--pin-servers", help="taskset CPU list for the servers, e.g. 1 (default: no pinning)")
    parser.add_argument("--pin-load", help="taskset CPU list for wrk, e.g. 0 (default: no pinning)")
    parser.add_argument("--startup-timeout", type=float, default=900, help="seconds kiln may take to compile and start")
    parser.add_argument(
        "--kiln-name",
        action="append",
        default=[],
        metavar="FILE=NAME",
        help="name kiln serves an example under, if not its file name "
        f"(built in: {', '.join(f'{k}={v}' for k, v in KILN_NAMES.items())})",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, kiln home)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    args.oip_models = [m for m in args.oip_models.split(",") if m]
    args.load_at_start = os.getloadavg()
    args.kiln_names = dict(KILN_NAMES)
    for pair in args.kiln_name:
        file, sep, name = pair.partition("=")
        if not sep:
            raise SystemExit(f"--kiln-name {pair}: expected FILE=NAME")
        args.kiln_names[file] = name
    levels = [int(c) for c in args.concurrency.split(",") if c]
    servers = [s for s in args.servers.split(",") if s]
    for s in servers:
        if s not in SERVERS:
            raise SystemExit(f"--servers: unknown server {s!r}; choose from {', '.join(SERVERS)}")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `apt-get install -y wrk`")
    if (args.pin_servers or args.pin_load) and shutil.which("taskset") is None:
        raise SystemExit("--pin-* needs taskset (util-linux)")
    if any(s.startswith("kiln") for s in servers) and not args.kiln_bin.is_file():
        raise SystemExit(
            f"{args.kiln_bin} not found: `cargo build --release --bin kiln`, pass --kiln-bin, "
            "or measure the seed only with --servers seed"
        )
    workloads = [Workload(m, m, False, first_row_body(m)) for m in args.models] + [
        Workload(f"{m} (oip)", m, True, first_row_oip_body(m)) for m in args.oip_models
    ]
    files = list(dict.fromkeys(w.file for w in workloads))

    work = Path(tempfile.mkdtemp(prefix="kiln-bench-"))
    running: list[Server] = []
    results: list[Result] = []
    failed = True
    try:
        print(f"work directory {work}", file=sys.stderr)
        seeds: dict[str, Server] = {}
        if "seed" in servers:
            for m in files:
                seeds[m] = start_seed(m, args, work)
                running.append(seeds[m])
        kilns: dict[str, Server] = {}
        home = work / "kiln-home"
        if any(s.startswith("kiln") for s in servers):
            # `kiln up` adds only its missing bundled examples and serves whatever else the
            # home holds in Production, so the OIP models are registered first.
            bundled = set(KILN_NAMES.values())
            for m in dict.fromkeys(args.oip_models):
                name = args.kiln_names.get(m, m)
                if name not in bundled:
                    register_kiln_model(m, name, args, home, work)
        # Started one after the other: the first compiles and registers the example
        # models into the home, the second finds them there.
        for name, cache in (("kiln", "off"), ("kiln-cached", "memory")):
            if name in servers:
                first = "" if kilns else " (the first start compiles the example models)"
                print(f"starting {name}{first}", file=sys.stderr)
                kilns[name] = start_kiln(name, cache, args, home, work)
                running.append(kilns[name])

        def server_for(name: str, model: str) -> Server:
            return seeds[model] if name == "seed" else kilns[name]

        for w in workloads:
            for name in servers:
                s = server_for(name, w.file)
                check_response(name, w, s.url(w))

        for w in workloads:
            for c in levels:
                for name in servers:
                    r = measure(server_for(name, w.file), w, c, args, work)
                    print(
                        f"{w.label:>20} c={c:<3} {name:<12} {r.rps:>9,.0f} req/s  p50 {r.p50_ms:6.2f} ms  "
                        f"p99 {r.p99_ms:6.2f} ms  errors {r.errors}",
                        file=sys.stderr,
                    )
                    results.append(r)
                    if r.requests == 0:
                        raise SystemExit(f"{name}/{w.label}: no request completed; see {server_for(name, w.file).log}")
        failed = False
    finally:
        for s in running:
            stop(s.proc)
        if args.keep or failed:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(machine_header(args))
    print()
    print(table(results))
    print()
    print(comparisons(results))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))
    if any(r.errors for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
