#!/usr/bin/env python3
"""Soak (issue 13, item 6): a 3-node fleet at ~70 % of its measured capacity for 10 minutes,
with a promote and a rollback, redis-server killed and restarted, and one node SIGKILLed
and restarted.

    cargo build --bin kiln && python3 bench/soak.py --kiln-bin target/debug/kiln [--minutes 10]

Targets: 0 failed requests outside the injected faults; RSS growth <= 5 % between minute 2
and minute 10.

The fleet: one registry, `kiln sync run` on it, 3 nodes `kiln serve --join ... --join-token-file
... --cache redis://127.0.0.1:PORT --cache-ttl-secs 10` sharing one `redis-server` (no
persistence). The models: the house-price forest (`house-price`) and the MLP (`mlp`), v1 of
each promoted before the load starts. With `--steady-start` (the default), `mlp` v2 (the same
model compiled with another version label, so another component) is then promoted too, with
the direct strategy, before the load: the fleet starts as a model with a release history
runs, its stable version serving and the previous one kept warm for a rollback, so the
promote in the middle replaces a warm version instead of adding one. With
`--no-steady-start` the fleet starts from v1 alone, and the promote loads a second version
on every node: a step in RSS (about one loaded version) that is not a leak. The load: open loop at `--load` (0.7) x the capacity
measured first (closed loop, 16 connections, 10 s, the same mix), spread evenly over the 3
nodes x {house-price, mlp} x {seed API `POST /v1/models/{name}/predict`, OIP `POST
/v2/models/{name}/infer`}, one row per request, from 2000 distinct bodies per kind (random
features), so that the shared prediction cache answers part of the requests and the
models run for the rest.

Events, at fractions of the run (minute marks for a 10-minute run):
- 25 % (2:30) promote: `mlp` v3 (v2 with `--no-steady-start`) is registered and promoted;
  its rollout policy is canary 50,100 every 10 s (`--min-requests 10`); the event lasts
  until the rollout has succeeded.
- 40 % (4:00) rollback: `kiln rollout rollback mlp` (the version before serves again, from
  its warm copy).
- 55 % (5:30) redis: redis-server SIGKILLed, restarted on the same port 5 s later.
- 75 % (7:30) node: the node edge-3 SIGKILLed, restarted 5 s later with the same home and
  flags (it serves its stored state at once and reports to the sync service again).

Each failed request (any status but 200, or no answer) is classified: within a fault's
window (from the event's start to `--grace` (10) s after it ended; for the node kill, only
requests sent to the killed node) or outside. Promote and rollback are operations, not
faults: their windows are shown, and their failures count as failures outside the faults.

The table per minute: requests, failures by status, p50/p99 of the 200s; then RSS and open
file descriptors of every process at the start and the end of the load, and RSS at minute
2 and at the end for the target (the restarted node's RSS is that of its new process).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_load import (  # noqa: E402
    CONN_ERROR, MODELS_DIR, ROOT, TIMEOUT, Conn, Records, Target, components, free_port, http_request, machine_note,
    open_fds, percentile, proc_status, run_load, wait_http,
)

MODELS = {"house_price_forest": "house-price", "mlp": "mlp"}
VARIANTS = 2000


def bodies(file: str, oip: bool, rng: random.Random) -> list[bytes]:
    t = json.loads((MODELS_DIR / f"{file}.request.json").read_text())["inputs"][0]
    w = t["shape"][1]
    rows = [t["data"][i * w:(i + 1) * w] for i in range(t["shape"][0])]
    out = []
    for i in range(VARIANTS):
        row = [round(x * rng.uniform(0.8, 1.2), 4) for x in rows[i % len(rows)]]
        if oip:
            out.append(json.dumps({"inputs": [{"name": t["name"], "shape": [1, w], "datatype": t["datatype"], "data": row}]}).encode())
        else:
            out.append(json.dumps({"features": row}).encode())
    return out


def status_name(s: int) -> str:
    return {CONN_ERROR: "no answer", TIMEOUT: "timeout"}.get(s, str(s))


class Fleet:
    def __init__(self, args, work: Path, env: dict):
        self.args, self.work, self.env = args, work, env
        nice = args.fleet_nice
        self.pre = (lambda: os.nice(nice)) if nice else None
        self.redis_port = free_port()
        self.sync_addr = f"127.0.0.1:{free_port()}"
        self.ports = [free_port() for _ in range(3)]
        self.procs: dict[str, subprocess.Popen] = {}

    def kiln(self, *a: str) -> str:
        return subprocess.run([self.args.kiln_bin, *a], env=self.env, check=True, capture_output=True, text=True).stdout

    def start_redis(self) -> None:
        self.procs["redis"] = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=open(self.work / "redis.log", "a"), stderr=subprocess.STDOUT, preexec_fn=self.pre)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def start_sync(self) -> None:
        self.procs["sync"] = subprocess.Popen(
            [self.args.kiln_bin, "sync", "run", "--listen", self.sync_addr, "--check-interval", "500ms"],
            env=self.env, stdout=open(self.work / "sync.log", "a"), stderr=subprocess.STDOUT, preexec_fn=self.pre)

    def start_node(self, i: int) -> None:
        self.procs[f"edge-{i + 1}"] = subprocess.Popen(
            [self.args.kiln_bin, "serve", "--listen", f"127.0.0.1:{self.ports[i]}", "--join", f"http://{self.sync_addr}",
             "--join-token-file", str(self.work / "join.token"), "--node-name", f"edge-{i + 1}",
             "--cache", f"redis://127.0.0.1:{self.redis_port}", "--cache-ttl-secs", "10", *self.args.serve_args.split()],
            env=dict(self.env, KILN_HOME=str(self.work / f"node-{i + 1}")),
            stdout=open(self.work / f"edge-{i + 1}.log", "a"), stderr=subprocess.STDOUT, preexec_fn=self.pre)

    def kill(self, name: str) -> None:
        p = self.procs[name]
        p.send_signal(signal.SIGKILL)
        p.wait()

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def smaps(pid: int) -> dict[str, list[int]]:
    """Resident KiB per mapping of a process, from /proc/PID/smaps: file mappings summed by
    path (a memory-mapped AOT artifact mapped into many instance slots is one row), anonymous
    ones by name ([heap], [stack]) or by start address. Value: [Rss, Anonymous, mappings]."""
    out: dict[str, list[int]] = {}
    key = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(None, 5)
        if "-" in head[0] and not head[0].endswith(":"):
            name = head[5] if len(head) > 5 else ""
            key = name if name else f"anon {head[0].split('-')[0]}"
            out.setdefault(key, [0, 0, 0])[2] += 1
        elif head[0] == "Rss:":
            out[key][0] += int(head[1])
        elif head[0] == "Anonymous:":
            out[key][1] += int(head[1])
    return out


def metrics_lines(port: int) -> list[str]:
    """A node's /metrics, line by line."""
    c = Conn(port, 5)
    _, _, body = c.send(http_request("GET", "/metrics"))
    c.close()
    return body.decode(errors="replace").splitlines()


def metric(port: int, name: str) -> float | None:
    """An unlabelled sample of a node's /metrics, or None."""
    try:
        lines = metrics_lines(port)
    except OSError:
        return None
    for line in lines:
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_until(what: str, check, limit: float) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def wait_rollout(fleet: "Fleet", version: int, limit: float = 120) -> str | None:
    """Waits for the rollout of `mlp` to `version` to end; its final state."""
    deadline = time.monotonic() + limit
    state = None
    while time.monotonic() < deadline:
        listed = json.loads(fleet.kiln("rollout", "status", "mlp", "--json"))
        state = listed[0]["state"] if listed else None
        if listed and listed[0].get("to_version") == version and state in ("succeeded", "rolled_back", "aborted"):
            break
        time.sleep(0.5)
    return state


def serves(port: int, raw: bytes, version: int) -> bool:
    """Whether the node answers the OIP request `raw` with `version` (the routing push has
    landed)."""
    c = Conn(port, 5)
    status, _, body = c.send(raw)
    c.close()
    return status == 200 and json.loads(body).get("model_version") == str(version)


def answers_200(port: int, raw: bytes) -> bool:
    c = Conn(port, 5)
    status, _, _ = c.send(raw)
    c.close()
    return status == 200


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kiln-bin", default=str(ROOT / "target" / "release" / "kiln"))
    ap.add_argument("--components", default="/tmp/kiln-bench-components")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--load", type=float, default=0.7, help="share of the measured capacity offered")
    ap.add_argument("--connections", type=int, default=64, help="client connections of the open loop")
    ap.add_argument("--grace", type=float, default=10, help="seconds after a fault's end still counted in its window")
    ap.add_argument("--fleet-nice", type=int, default=-5 if os.geteuid() == 0 else 0,
                    help="nice increment of the nodes, the sync service and redis (default -5 as root: ahead of the "
                         "load generator and of whatever else runs on the machine, e.g. builds)")
    ap.add_argument("--steady-start", action=argparse.BooleanOptionalAction, default=True,
                    help="start with mlp v2 serving and v1 kept warm (see above)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--serve-args", default="",
                    help="extra flags of every node, e.g. '--no-drift-profiles' (drift profiles hold up to an hour of "
                         "per-minute windows: memory that grows for an hour by design)")
    ap.add_argument("--dump", help="write every answer (t, latency, status, target label) as JSON lines here")
    args = ap.parse_args()
    note = machine_note()
    work = Path(tempfile.mkdtemp(prefix="kiln-soak-"))
    comp = Path(args.components)
    env = dict(os.environ, KILN_HOME=str(work / "registry"), KILN_ACTOR="bench", KILN_CACHE_DIR=str(comp / "aot"))
    env.setdefault("KILN_LOG", "warn")
    fleet = Fleet(args, work, env)
    promoted = 3 if args.steady_start else 2  # the mlp version promoted in the middle
    wasm = components(args.kiln_bin, [*MODELS, *(f"mlp@{v}" for v in range(2, promoted + 1))], comp, env)
    golden = {}
    for file, name in MODELS.items():
        golden[name] = work / f"{name}.golden.json"
        golden[name].write_bytes((MODELS_DIR / f"{file}.request.json").read_bytes())
        fleet.kiln("models", "register", str(wasm[file]), "--name", name, "--golden", str(golden[name]))
        fleet.kiln("models", "promote", name, "1", "Production")
    step = max(2, round(args.minutes))  # 10 s steps in a 10-minute run, 2 s in a quick one
    (work / "join.token").write_text(fleet.kiln("tokens", "create", "--name", "bench-join", "--role", "node"))

    rng = random.Random(13)
    kinds = []
    for file, name in MODELS.items():
        h = {"Content-Type": "application/json"}
        kinds.append((f"{name} seed", [http_request("POST", f"/v1/models/{name}/predict", b, h) for b in bodies(file, False, rng)]))
        kinds.append((f"{name} oip", [http_request("POST", f"/v2/models/{name}/infer", b, h) for b in bodies(file, True, rng)]))
    targets = [Target(f"edge-{i + 1} {label}", port, raws) for i, port in enumerate(fleet.ports) for label, raws in kinds]

    total = args.minutes * 60
    events: list[dict] = []  # name, start, end (s since the load's start), node (or None)
    samples: list[tuple[float, str, int, int]] = []  # t, process, RSS KiB, fds
    rss_parts: list[tuple[float, str, int, int]] = []  # t, process, RssAnon KiB, RssFile KiB
    maps: dict[str, dict[str, dict[str, list[int]]]] = {}  # "m2"/"end" -> process -> smaps()
    drift_bytes: dict[str, dict[str, float | None]] = {}  # "m2"/"end" -> node -> kiln_drift_profile_bytes
    try:
        fleet.start_redis()
        fleet.start_sync()
        for i in range(3):
            fleet.start_node(i)
        for i, port in enumerate(fleet.ports):
            wait_http(port, "/v2/health/ready", 600, fleet.procs[f"edge-{i + 1}"])
        for port in fleet.ports:
            for _, raws in kinds:
                wait_until(f"127.0.0.1:{port} serving", lambda: answers_200(port, raws[0]), 300)
        if args.steady_start:
            fleet.kiln("rollout", "policy", "mlp", "--strategy", "direct")
            fleet.kiln("models", "register", str(wasm["mlp@2"]), "--name", "mlp", "--golden", str(golden["mlp"]))
            fleet.kiln("models", "promote", "mlp", "2", "Production")
            state = wait_rollout(fleet, 2)
            if state != "succeeded":
                raise SystemExit(f"promoting mlp v2 before the load: the rollout ended {state}")
            for port in fleet.ports:
                mlp_oip = dict(kinds)["mlp oip"][0]
                wait_until(f"127.0.0.1:{port} serving mlp v2", lambda: serves(port, mlp_oip, 2), 120)
        fleet.kiln("rollout", "policy", "mlp", "--strategy", "canary", "--steps", "50,100", "--interval", f"{step}s",
                   "--min-requests", "10")
        print("fleet up; measuring capacity", file=sys.stderr)
        run_load(targets, 3, 16)
        cap_rec = run_load(targets, 10, 16)
        capacity = sum(1 for s in cap_rec.status if s == 200) / 10
        cap_errors = collections.Counter(s for s in cap_rec.status if s != 200)
        rate = args.load * capacity
        print(f"capacity {capacity:.0f} req/s; soak at {rate:.0f} req/s for {total:.0f} s", file=sys.stderr)

        result: list[Records] = []
        t0 = time.time() + 0.5
        loader = threading.Thread(target=lambda: result.append(
            run_load(targets, total, args.connections, rate=rate, timeout=10, start_delay=t0 - time.time())))
        loader.start()
        stop_sampling = threading.Event()

        def sampler() -> None:
            while not stop_sampling.is_set():
                now = time.time() - t0
                for name, p in list(fleet.procs.items()):
                    if p.poll() is None:
                        try:
                            samples.append((now, name, proc_status(p.pid, "VmRSS"), open_fds(p.pid)))
                            rss_parts.append((now, name, proc_status(p.pid, "RssAnon"), proc_status(p.pid, "RssFile")))
                            port = fleet.ports[int(name[5:]) - 1] if name.startswith("edge-") else None
                            if now >= m2 and name not in maps.setdefault("m2", {}):
                                maps["m2"][name] = smaps(p.pid)
                                if port:
                                    drift_bytes.setdefault("m2", {})[name] = metric(port, "kiln_drift_profile_bytes")
                            if now <= total:
                                maps.setdefault("end", {})[name] = smaps(p.pid)
                                if port:
                                    drift_bytes.setdefault("end", {})[name] = metric(port, "kiln_drift_profile_bytes")
                        except OSError:
                            pass
                stop_sampling.wait(5)

        m2 = min(120.0, total * 0.2)
        sam = threading.Thread(target=sampler, daemon=True)
        sam.start()

        def at(frac: float) -> None:
            d = t0 + frac * total - time.time()
            if d > 0:
                time.sleep(d)

        def event(name: str, node: int | None = None) -> dict:
            e = {"name": name, "start": time.time() - t0, "end": None, "node": node}
            events.append(e)
            print(f"{e['start']:.0f} s: {name}", file=sys.stderr)
            return e

        at(0.25)
        e = event(f"promote mlp v{promoted} (canary 50,100, {step} s steps)")
        fleet.kiln("models", "register", str(wasm[f"mlp@{promoted}"]), "--name", "mlp", "--golden", str(golden["mlp"]))
        fleet.kiln("models", "promote", "mlp", str(promoted), "Production")
        state = wait_rollout(fleet, promoted)
        e["end"] = time.time() - t0
        e["name"] += f": {state} after {e['end'] - e['start']:.0f} s"
        at(0.40)
        e = event("rollback mlp (kiln rollout rollback)")
        out = fleet.kiln("rollout", "rollback", "mlp").strip().splitlines()
        e["end"] = time.time() - t0
        e["name"] += f": {out[-1] if out else ''}"
        at(0.55)
        e = event("redis-server SIGKILLed, restarted after 5 s")
        fleet.kill("redis")
        time.sleep(5)
        fleet.start_redis()
        e["end"] = time.time() - t0
        at(0.75)
        e = event("edge-3 SIGKILLed, restarted after 5 s", node=2)
        fleet.kill("edge-3")
        time.sleep(5)
        fleet.start_node(2)
        wait_http(fleet.ports[2], "/v2/health/ready", 300, fleet.procs["edge-3"])
        e["end"] = time.time() - t0
        e["name"] += f" (ready {e['end'] - e['start']:.1f} s after the kill)"
        loader.join()
        stop_sampling.set()
        sam.join()
        r = result[0]
        shed = {}
        for i, port in enumerate(fleet.ports):
            for line in metrics_lines(port):
                if line.startswith("kiln_overloaded_total{"):
                    reason = line.split('reason="', 1)[1].split('"', 1)[0] if 'reason="' in line else "?"
                    key = f"edge-{i + 1} {reason}"
                    shed[key] = shed.get(key, 0) + int(float(line.rsplit(" ", 1)[1]))
    finally:
        fleet.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    if args.dump:
        with open(args.dump, "w") as f:
            f.write(json.dumps({"events": events, "targets": [t.label for t in targets], "samples": samples}) + "\n")
            for i in range(len(r.status)):
                f.write(f"[{r.t[i]:.4f}, {r.lat[i]:.5f}, {r.status[i]}, {r.target[i]}]\n")

    # --- classify ------------------------------------------------------------------------
    ntarget = len(kinds)
    faults = [e for e in events if "SIGKILL" in e["name"]]

    def window_of(t: float, target: int) -> str | None:
        # A node's own window first: in a short run the windows overlap.
        for e in sorted(events, key=lambda e: e["node"] is None):
            if e["start"] - 0.5 <= t <= (e["end"] or e["start"]) + args.grace:
                if e["node"] is not None and target // ntarget != e["node"]:
                    continue
                return e["name"]
        return None

    per_minute: dict[int, list] = collections.defaultdict(list)
    fails_min: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    by_window: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    reqs_window: collections.Counter = collections.Counter()
    for i in range(len(r.status)):
        t, s = r.t[i], r.status[i]
        m = int(t // 60)
        w = window_of(t, r.target[i])
        reqs_window[w or "outside"] += 1
        if s == 200:
            per_minute[m].append(r.lat[i])
        else:
            fails_min[m][status_name(s)] += 1
            by_window[w or "outside"][status_name(s)] += 1
    fault_names = {e["name"] for e in faults}
    outside_fail = sum(n for w, c in by_window.items() if w not in fault_names for n in c.values())

    node_flags = f", node flags {args.serve_args}" if args.serve_args else ""
    print(f"\nsoak: 3 nodes (`kiln serve --join`, redis cache, TTL 10 s) + kiln sync run + redis-server on one machine "
          f"({note}); binary {args.kiln_bin}{node_flags}; capacity {capacity:.0f} req/s (closed loop, 16 connections, 10 s"
          f"{', non-200: ' + str(dict(cap_errors)) if cap_errors else ''}); load {args.load:.0%} of it = {rate:.0f} req/s "
          f"open loop, {args.connections} connections, for {args.minutes:g} min; {len(r.status)} requests"
          f"{f', {r.behind} scheduled sends skipped (client > 1 s behind)' if r.behind else ''}\n")
    print("| minute | requests | 200 p50 / p99 ms | failures (by status) |")
    print("|---:|---:|---:|---|")
    for m in sorted(set(per_minute) | set(fails_min)):
        lat = per_minute[m]
        n = len(lat) + sum(fails_min[m].values())
        f = ", ".join(f"{k}: {v}" for k, v in sorted(fails_min[m].items())) or "0"
        print(f"| {m + 1} | {n} | {percentile(lat, 50) * 1000:.1f} / {percentile(lat, 99) * 1000:.1f} | {f} |")
    print("\n| event (s from the start) | window | requests in the window | failures in it (by status) |")
    print("|---|---|---:|---|")
    for e in events:
        c = by_window.get(e["name"], {})
        where = f"requests to edge-{e['node'] + 1}" if e["node"] is not None else "all requests"
        print(f"| {e['name']} | {e['start']:.0f}–{(e['end'] or e['start']) + args.grace:.0f} s, {where} | "
              f"{reqs_window[e['name']]} | {', '.join(f'{k}: {v}' for k, v in sorted(c.items())) or '0'} |")
    c = by_window.get("outside", {})
    print(f"| outside every window | | {reqs_window['outside']} | {', '.join(f'{k}: {v}' for k, v in sorted(c.items())) or '0'} |")
    print(f"\n503s by kiln_overloaded_total reason (edge-3: since its restart): {shed or 'none'}")
    print(f"\nfailures outside the injected faults (redis and node kills), promote and rollback included: {outside_fail} "
          f"(target 0: {'met' if outside_fail == 0 else 'NOT met'})\n")

    samples = [x for x in samples if x[0] <= total]  # while the load ran
    m2 = min(120.0, total * 0.2)
    # Without --steady-start the promote loads a second MLP version on every node (kept warm
    # for a roll forward) and the sync service uploads it: a step in RSS, not a leak. Growth
    # is also shown from 60 s after the promote ended to the end.
    after = (events[0]["end"] or events[0]["start"]) + 60 if events else m2
    names = ["sync", "edge-1", "edge-2", "edge-3", "redis"]
    print("| minute (its last sample) | " + " | ".join(f"{n} RSS MiB / fds" for n in names) + " |")
    print("|---:|" + "---:|" * len(names))
    for m in range(int(total // 60) + 1):
        cells = []
        for n in names:
            ss = [x for x in samples if x[1] == n and m * 60 <= x[0] < (m + 1) * 60]
            cells.append(f"{ss[-1][2] / 1024:.0f} / {ss[-1][3]}" if ss else "")
        if any(cells):
            print(f"| {m + 1} | " + " | ".join(cells) + " |")
    print()
    print(f"| process | RSS start → end MiB | RSS at minute {m2 / 60:g} → end: growth | RSS at {after:.0f} s (after the promote) → end: growth | open fds start → end |")
    print("|---|---:|---:|---:|---:|")
    worst = 0.0
    worst_after = 0.0
    for name in ["sync", "edge-1", "edge-2", "edge-3", "redis"]:
        ss = [x for x in samples if x[1] == name]
        if not ss:
            continue
        first, last = ss[0], ss[-1]
        at2 = min(ss, key=lambda x: abs(x[0] - m2))
        growth = (last[2] - at2[2]) / at2[2] if at2[2] else 0.0
        atp = min(ss, key=lambda x: abs(x[0] - after))
        growth_after = (last[2] - atp[2]) / atp[2] if atp[2] else 0.0
        restarted = name == "edge-3" or name == "redis"
        if not restarted:
            worst = max(worst, growth)
            worst_after = max(worst_after, growth_after)
        note2 = " (restarted: its new process)" if restarted else ""
        print(f"| {name} | {first[2] / 1024:.0f} → {last[2] / 1024:.0f} | {at2[2] / 1024:.0f} → {last[2] / 1024:.0f}: "
              f"{growth:+.1%}{note2} | {atp[2] / 1024:.0f} → {last[2] / 1024:.0f}: {growth_after:+.1%} | {first[3]} → {last[3]} |")
    # What the growth is made of: anonymous memory (heap, instances) or file pages (the
    # binary, memory-mapped AOT artifacts), which the kernel can drop.
    print(f"\n| process | RssAnon at minute {m2 / 60:g} → end MiB | RssFile at minute {m2 / 60:g} → end MiB |")
    print("|---|---:|---:|")
    for name in ["sync", "edge-1", "edge-2"]:
        ks = [x for x in rss_parts if x[1] == name and x[0] <= total]
        if ks:
            at2 = min(ks, key=lambda x: abs(x[0] - m2))
            print(f"| {name} | {at2[2] / 1024:.1f} → {ks[-1][2] / 1024:.1f} | {at2[3] / 1024:.1f} → {ks[-1][3] / 1024:.1f} |")
    # How much of the heap's growth the drift profiles' windows account for (their own
    # count of what they hold, allocator overhead not included).
    print(f"\n| node | kiln_drift_profile_bytes at minute {m2 / 60:g} → end MiB | RssAnon growth MiB | of it not in the windows MiB |")
    print("|---|---:|---:|---:|")
    for name in ["edge-1", "edge-2"]:
        a, b = drift_bytes.get("m2", {}).get(name), drift_bytes.get("end", {}).get(name)
        ks = [x for x in rss_parts if x[1] == name and x[0] <= total]
        if a is None or b is None or not ks:
            continue
        at2 = min(ks, key=lambda x: abs(x[0] - m2))
        anon = (ks[-1][2] - at2[2]) / 1024
        print(f"| {name} | {a / 2**20:.2f} → {b / 2**20:.2f} | {anon:+.2f} | {anon - (b - a) / 2**20:+.2f} |")
    # Which mappings grew: the processes that lived through the run, mappings whose resident
    # size changed by 64 KiB or more.
    print(f"\n| process | mapping | Rss at minute {m2 / 60:g} → end KiB (anonymous) | mappings |")
    print("|---|---|---:|---:|")
    for name in ["sync", "edge-1", "edge-2"]:
        a, b = maps.get("m2", {}).get(name, {}), maps.get("end", {}).get(name, {})
        rows = sorted(set(a) | set(b), key=lambda k: -abs(b.get(k, [0, 0, 0])[0] - a.get(k, [0, 0, 0])[0]))
        for k in rows:
            x, y = a.get(k, [0, 0, 0]), b.get(k, [0, 0, 0])
            if abs(y[0] - x[0]) >= 64:
                print(f"| {name} | {k} | {x[0]} → {y[0]} ({x[1]} → {y[1]}) | {x[2]} → {y[2]} |")
    print(f"\nRSS growth from minute {m2 / 60:g} to the end, worst of sync, edge-1, edge-2: {worst:+.1%} "
          f"(target ≤ 5 %: {'met' if worst <= 0.05 else 'NOT met'}); from {after:.0f} s (after the promote): {worst_after:+.1%}")


if __name__ == "__main__":
    main()
