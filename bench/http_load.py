"""Load generation and process measurement for the issue-13 bench scripts (overload.py,
request_memory.py, soak.py): HTTP/1.1 keep-alive requests over raw sockets from several
processes (each with its own GIL, so the load generator can use both cores of the
development machine), closed-loop or open-loop, every answer recorded with its send time,
latency, status and whether it carried Retry-After; plus the kiln helpers the scripts share
(compile the example models once, start `kiln serve`, read /proc).

Standard library only. Raw sockets rather than http.client: the requests are encoded once,
and the answer is parsed no further than its status, headers and Content-Length, so that a
Python client on 2 cores can offer several times what a Kiln server on the same cores
answers.
"""

from __future__ import annotations

import array
import json
import multiprocessing as mp
import os
import random
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "examples" / "models"

# Status codes recorded for failures that never got an HTTP answer.
CONN_ERROR = 0  # refused, reset, closed before the answer
TIMEOUT = 1  # no answer within the client's timeout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_request(method: str, path: str, body: bytes = b"", headers: dict | None = None) -> bytes:
    """The bytes of one HTTP/1.1 keep-alive request to 127.0.0.1."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def oip_body(model: str, rows: int = 1) -> bytes:
    """An OIP v2 JSON body of the example request's first `rows` rows (repeated as needed)."""
    t = json.loads((MODELS_DIR / f"{model}.request.json").read_text())["inputs"][0]
    width = t["shape"][1]
    base = [t["data"][i * width:(i + 1) * width] for i in range(t["shape"][0])]
    data = [x for r in range(rows) for x in base[r % len(base)]]
    return json.dumps({"inputs": [{"name": t["name"], "shape": [rows, width], "datatype": t["datatype"], "data": data}]}).encode()


def seed_body(model: str, row: int = 0) -> bytes:
    t = json.loads((MODELS_DIR / f"{model}.request.json").read_text())["inputs"][0]
    width = t["shape"][1]
    return json.dumps({"features": t["data"][row * width:(row + 1) * width]}).encode()


class Conn:
    """One keep-alive connection; reconnects after any failure."""

    def __init__(self, port: int, timeout: float):
        self.port = port
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.buf = b""
        self.last_error = ""

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        self.buf += chunk

    def send(self, raw: bytes) -> tuple[int, bool, bytes]:
        """(status, has Retry-After, body); status CONN_ERROR/TIMEOUT when no answer came."""
        try:
            if self.sock is None:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.sendall(raw)
            while b"\r\n\r\n" not in self.buf:
                self._fill()
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            status = int(lines[0].split()[1])
            length = 0
            retry_after = False
            close = False
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                k = k.strip().lower()
                if k == b"content-length":
                    length = int(v)
                elif k == b"retry-after":
                    retry_after = True
                elif k == b"connection" and v.strip().lower() == b"close":
                    close = True
            while len(self.buf) < length:
                self._fill()
            body, self.buf = self.buf[:length], self.buf[length:]
            if close:
                self.close()
            return status, retry_after, body
        except socket.timeout:
            self.close()
            return TIMEOUT, False, b""
        except (OSError, ValueError, IndexError) as e:
            self.last_error = repr(e)
            self.close()
            return CONN_ERROR, False, b""


@dataclass
class Target:
    """One kind of request: where it goes and its bytes (a label for the tables); a list of
    requests is sent in turn (distinct bodies, so that a prediction cache does not answer
    them all)."""

    label: str
    port: int
    raw: bytes | list[bytes]


@dataclass
class Records:
    """Every answer: send time (s since the run's start), latency (s), status, Retry-After,
    target index."""

    t: array.array = field(default_factory=lambda: array.array("d"))
    lat: array.array = field(default_factory=lambda: array.array("d"))
    status: array.array = field(default_factory=lambda: array.array("i"))
    retry: array.array = field(default_factory=lambda: array.array("b"))
    target: array.array = field(default_factory=lambda: array.array("i"))
    behind: int = 0  # open loop: sends skipped because the client fell more than 1 s behind

    def extend(self, o: "Records") -> None:
        self.t.extend(o.t)
        self.lat.extend(o.lat)
        self.status.extend(o.status)
        self.retry.extend(o.retry)
        self.target.extend(o.target)
        self.behind += o.behind


def _thread(targets: list[Target], order: list[int], start: float, duration: float, period: float | None,
            offset: float, timeout: float, out: Records, lock: threading.Lock, stop: list) -> None:
    conns: dict[int, Conn] = {}
    rec = Records()
    k = 0
    seed = random.randrange(1 << 30)
    next_at = start + offset
    end = start + duration
    while True:
        now = time.time()
        if now >= end or stop:
            break
        if period is not None:
            if next_at > now:
                time.sleep(min(next_at - now, end - now))
                if time.time() >= end:
                    break
            elif now - next_at > 1.0:
                skipped = int((now - next_at) / period)
                rec.behind += skipped
                next_at += skipped * period
            next_at += period
        ti = order[k % len(order)]
        k += 1
        tg = targets[ti]
        c = conns.get(tg.port)
        if c is None:
            c = conns[tg.port] = Conn(tg.port, timeout)
        t0 = time.time()
        status, retry, _ = c.send(tg.raw if isinstance(tg.raw, bytes) else tg.raw[(seed + k) % len(tg.raw)])
        t1 = time.time()
        rec.t.append(t0 - start)
        rec.lat.append(t1 - t0)
        rec.status.append(status)
        rec.retry.append(1 if retry else 0)
        rec.target.append(ti)
        if status == CONN_ERROR:
            time.sleep(0.01)  # a dead node: do not spin on connect
    for c in conns.values():
        c.close()
    with lock:
        out.extend(rec)


def _process(targets, threads, first_thread, total_threads, start, duration, rate, timeout, conn, nice) -> None:
    if nice:
        os.nice(nice)
    random.seed()  # forked: not the parent's sequence
    out = Records()
    lock = threading.Lock()
    stop: list = []
    period = total_threads / rate if rate else None
    ts = []
    for i in range(threads):
        n = first_thread + i
        # Each thread walks every target, starting at a different one.
        order = [(n + j) % len(targets) for j in range(len(targets))]
        offset = (n / rate) if rate else 0.0
        th = threading.Thread(target=_thread, args=(targets, order, start, duration, period, offset, timeout, out, lock, stop), daemon=True)
        th.start()
        ts.append(th)
    for th in ts:
        th.join()
    conn.send((out.t.tobytes(), out.lat.tobytes(), out.status.tobytes(), out.retry.tobytes(), out.target.tobytes(), out.behind))
    conn.close()


def run_load(targets: list[Target], duration: float, connections: int, rate: float | None = None,
             processes: int = 2, timeout: float = 30.0, start_delay: float = 0.5, nice: int = 0) -> Records:
    """`connections` client threads spread over `processes` processes, each with one
    keep-alive connection per server port. Closed loop when `rate` is None (each thread sends
    its next request when its answer arrives), else open loop at `rate` requests/s overall
    (each thread on its own schedule of `connections / rate` s; a thread whose answer comes
    late sends at once, and one more than 1 s behind skips the missed sends, counted in
    `behind`). Blocks for the duration; returns every answer."""
    processes = max(1, min(processes, connections))
    start = time.time() + start_delay
    per = [connections // processes + (1 if i < connections % processes else 0) for i in range(processes)]
    ctx = mp.get_context("fork")
    pipes, procs = [], []
    first = 0
    for n in per:
        a, b = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_process, args=(targets, n, first, connections, start, duration, rate, timeout, b, nice), daemon=True)
        p.start()
        procs.append(p)
        pipes.append(a)
        first += n
    out = Records()
    for a in pipes:
        t, lat, status, retry, target, behind = a.recv()
        r = Records()
        r.t.frombytes(t)
        r.lat.frombytes(lat)
        r.status.frombytes(status)
        r.retry.frombytes(retry)
        r.target.frombytes(target)
        r.behind = behind
        out.extend(r)
    for p in procs:
        p.join()
    return out


def percentile(values, q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q / 100 * len(s)))]


# --- health probes, in a process of their own so the load's GIL never delays them -------

def _probe(port: int, paths: list[str], interval: float, duration: float, start: float, conn, nice: int) -> None:
    if nice:
        os.nice(nice)
    time.sleep(max(0.0, start - time.time()))
    c = Conn(port, 5.0)
    raws = [http_request("GET", p) for p in paths]
    out = []  # (path index, latency s, status)
    k = 0
    end = start + duration
    next_at = time.time()
    while time.time() < end:
        i = k % len(raws)
        k += 1
        t0 = time.perf_counter()
        status, _, _ = c.send(raws[i])
        out.append((i, time.perf_counter() - t0, status))
        next_at += interval
        d = next_at - time.time()
        if d > 0:
            time.sleep(d)
    conn.send(out)
    conn.close()


class Prober:
    """GET `paths` in turn every `interval` s on one keep-alive connection of its own."""

    def __init__(self, port: int, paths: list[str], interval: float, duration: float, start_delay: float = 0.5, nice: int = 0):
        ctx = mp.get_context("fork")
        self.pipe, b = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_probe, args=(port, paths, interval, duration, time.time() + start_delay, b, nice), daemon=True)
        self.proc.start()

    def result(self) -> list[tuple[int, float, int]]:
        out = self.pipe.recv()
        self.proc.join()
        return out


# --- kiln ------------------------------------------------------------------------------

def proc_status(pid: int, key: str) -> int:
    """A /proc/PID/status field in KiB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int, name: str) -> float:
    """CPU seconds so far of the threads of process `pid` named `name` (their `comm`), from
    their schedstat (nanoseconds); 0 if there is none."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().strip() == name:
                total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended
    return total / 1e9


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def components(kiln_bin: str, models: list[str], cache: Path, env: dict) -> dict[str, Path]:
    """examples/models/<m>.onnx compiled once into `cache` (kept between runs: a debug-build
    compile of the MLP takes minutes on 2 cores)."""
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for m in models:
        label = None
        name = m
        if "@" in m:  # "mlp@2": the same model compiled with another version label (another digest)
            name, label = m.split("@", 1)
        wasm = cache / f"{m.replace('@', '-v')}.wasm"
        if not wasm.exists():
            cmd = [kiln_bin, "compile", str(MODELS_DIR / f"{name}.onnx"), "-o", str(wasm)]
            if label:
                cmd += ["--model-version", label]
            subprocess.run(cmd, env=env, check=True, capture_output=True)
        out[m] = wasm
    return out


def wait_http(port: int, path: str, limit: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + limit
    c = Conn(port, 2.0)
    while True:
        status, _, _ = c.send(http_request("GET", path))
        if status == 200:
            c.close()
            return
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}) before {path} answered 200")
        if time.monotonic() > deadline:
            raise SystemExit(f"127.0.0.1:{port}{path} not 200 within {limit:.0f} s (last status {status})")
        time.sleep(0.1)


def machine_note() -> str:
    load = os.getloadavg()
    return (f"{os.cpu_count()} cores, load average {load[0]:.2f} at the start; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
