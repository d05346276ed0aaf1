"""Alert benchmark: real Mosquitto -> MQTT ingest -> rule engine (57 rules) -> WebSocket client + webhook receiver.

In one run it measures, on the same machine and the same load:
  1. the Node-RED peer (../shared/peers/node-red: flow.json through run-peer.sh, measured by its own load.py,
     unmodified, as a subprocess) at each rate, and its highest clean rate (--find-max);
  2. our node (separate process: paho ingest, pipeline, in-process bus, SQLite store writer that stores every event,
     WarningService with bench/rules_50.yaml, notify, HTTP app under uvicorn), driven by the same load.py imported
     with importlib: its stream, oracle, pacing, drain barrier, classification and find-max ladder are used as they
     are. Per step the step's devices are registered through the HTTP API first (`POST /api/v1/devices/import`).

Contract mapping: a bench-side adapter process holds a WebSocket client on `WS /api/v1/alerts/live` and a webhook
receiver (a subscription, Standard Webhooks signatures verified); for every firing (`alert.raised`, `alert.updated`)
it republishes `{"building": tags.building, "trigger_id": trigger_message_id, "ts_sent"}` to `safecity/alerts`
(WebSocket path, the one load.py measures) and to `bench/alerts/webhook` (webhook path, checked against the same
oracle by a second load.py listener). Both engines get their own broker (same mosquitto.conf, another port) so
neither sees the other's load.

    python bench/alerts.py [--quick] [--rates 1000,5000,10000] [--duration 20] [--no-node-red] [--no-find-max]

`--quick` (about a minute) skips the ladders and measures each node at 5,000/s and at its budget rate instead: the
equal-work node at 1.5x Node-RED storing's highest clean rate, the 57-rule node at that rate itself (Node-RED's is its
recorded figure unless it was measured in this run), each step aimed 1% above, as load.py counts the rate it
achieved. Node-RED storing runs the equal-work budget step too: where it is clean there as well, its recorded figure
understates it on this machine and the ratio criterion is not met (with a note saying so). The last output line is
one JSON object; its `budget` object says which of the issue's criteria the run met.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import csv
import importlib.util
import io
import json
import math
import multiprocessing as mp
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
RULES57 = HERE / "rules_50.yaml"
# Equal work with the Node-RED peer: its two contract rules, every event and alert stored.
RULES = HERE.parent / "src" / "safecity" / "warning" / "rulepacks" / "nodered_peer.yaml"
RECORDED = "results/2026-11-29/results.jsonl"
RECORDED_STORE = "results/2026-12-03-store/find-max.log"  # Node-RED storing every event (run-peer.sh --store)
# The budget: equal work at 1.5x Node-RED storing's highest clean rate; 57 rules p99 <= 20 ms at 5,000/s and
# at least Node-RED storing's rate; under 1 ms of node CPU per delivered alert.
RATIO_BUDGET = 1.5
PACING_MARGIN = 1.01  # quick: budget steps aim this far above the rate they must reach
P99_BUDGET_MS = 20.0
ALERT_CPU_BUDGET_MS = 1.0
STORM_DETECTORS = 500
STORM_WINDOW_S = 10.0
WS_TOPIC = "safecity/alerts"
HOOK_TOPIC = "bench/alerts/webhook"
PROBES_PER_BARRIER = 64
# Messages that are a rule firing on a completing event: `new` (alert.raised) and `update` (alert.updated: the same
# rule and group fired again within its group_window, e.g. two high temps of one detector 0.4 s apart, which the
# contract counts as two alerts). Cooldown-suppressed matches publish nothing.
FIRINGS = ("new", "update")  # load.py sends a fresh probe every 2 s while draining: 64 covers a 120 s drain
# Rules whose `update` is a detector joining the open alert, not a firing: since alerts list who joined them, a third
# detector of a building within the group window updates the smoke-pair alert (it is delivered as an update), where
# the contract says it "must stay silent". Their updates are delivered and counted, but not republished.
JOIN_ONLY_RULES = frozenset({"peer.smoke_pair"})


def contract_firing(doc: dict[str, Any]) -> bool:
    """Whether a delivered message is a firing in the Node-RED contract's sense (see FIRINGS, JOIN_ONLY_RULES)."""
    kind = doc.get("type")
    if kind == "new":
        return True
    return kind == "update" and (doc.get("alert") or {}).get("rule_id") not in JOIN_ONLY_RULES


def peer_dir() -> Path:
    """The Node-RED kit: $SAFECITY_SHARED/peers/node-red, else ../shared next to the repository."""
    shared = os.environ.get("SAFECITY_SHARED")
    base = Path(shared) if shared else HERE.parent.parent / "shared"
    return base / "peers" / "node-red"


def import_load(path: Path) -> ModuleType:
    """Import the kit's load.py as a module (never copied into this repository)."""
    spec = importlib.util.spec_from_file_location("nodered_load", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["nodered_load"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout_s: float, proc: Any = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"process for port {port} exited")
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f} s")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a process this script started, by its handle."""
    if proc.poll() is None:
        proc.terminate()
        proc.wait(5)


def start_mosquitto(kit: Path, workdir: Path, name: str) -> tuple[subprocess.Popen[bytes], int]:
    """A broker from the kit's mosquitto.conf on a free port (the same configuration for both engines)."""
    if shutil.which("mosquitto") is None:
        raise SystemExit("mosquitto not found: apt-get install -y mosquitto")
    port = free_port()
    conf = (kit / "mosquitto.conf").read_text().replace("listener 18830 127.0.0.1", f"listener {port} 127.0.0.1")
    path = workdir / f"mosquitto-{name}.conf"
    path.write_text(conf)
    log = (workdir / f"mosquitto-{name}.log").open("wb")
    proc = subprocess.Popen(["mosquitto", "-c", str(path)], stdout=log, stderr=subprocess.STDOUT)
    wait_port(port, 10, proc)
    return proc, port


# ---------------------------------------------------------------------------------------------------------------
# Our node, in its own process


def node_main(cfg: dict[str, Any], conn: Connection) -> None:
    """Child process: the SafeCity node with MQTT ingest, store, rules, notify and the HTTP app."""
    from safecity.kernel import logging as sc_logging

    sc_logging.configure("warning", json=True)
    asyncio.run(_node(cfg, conn))


async def _node(cfg: dict[str, Any], conn: Connection) -> None:
    import uvicorn

    from safecity.api.app import create_app
    from safecity.kernel.settings import Settings
    from safecity.runtime import Runtime
    from safecity.sharing.keys import Role

    if cfg["slow_callback_ms"]:
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        loop.slow_callback_duration = cfg["slow_callback_ms"] / 1000
    settings = Settings(
        node_id="bench-alerts",
        log_level="warning",
        database={"url": cfg["db_url"]},
        mqtt={
            "enabled": True,
            "host": "127.0.0.1",
            "port": cfg["mqtt_port"],
            "client_id": "bench-alerts-node",
            "frigate": False,
            "qos": 0,  # load.py publishes QoS 0, as for Node-RED
        },
        warning={"rules": cfg["rules"]},
        notify={"allow_loopback": True, "webhook_allow_hosts": ["127.0.0.1"]},
    )
    rt = Runtime(settings)
    await rt.start()
    assert rt.mqtt is not None
    await asyncio.wait_for(rt.mqtt.connected.wait(), 10)
    admin = await rt.keys.create("bench admin", Role.ADMIN)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(rt.api_services()),
            host="127.0.0.1",
            port=cfg["http_port"],
            log_level="warning",
            access_log=False,
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for "listening")
        await asyncio.sleep(0.02)
    conn.send(("ready", admin.key))
    loop = asyncio.get_running_loop()
    while True:
        op = await loop.run_in_executor(None, conn.recv)
        if op == "stats":
            await rt.writer.flush()
            warning = rt.warning.status() if rt.warning is not None else {}
            async with rt.engine.connect() as db:  # the node's own events (dispatch's SLA events) are not counted
                from_mqtt = (await db.exec_driver_sql("SELECT count(*) FROM events WHERE source LIKE 'mqtt%'")).scalar()
            conn.send(
                (
                    "stats",
                    {
                        "stored": rt.writer.stats.rows_written,
                        "stored_from_mqtt": from_mqtt,
                        "mqtt_received": rt.mqtt.topics.received,
                        "warning_handled": warning.get("handled"),
                        "alerts_raised": warning.get("raised"),
                        "alerts_updated": warning.get("updated"),
                        "engine_max_backlog": warning.get("max_backlog"),
                        "rules": len(rt.warning.engine.rules) if rt.warning is not None else 0,
                    },
                )
            )
        elif op == "stop":
            break
    server.should_exit = True
    await serving  # the app's lifespan stops the runtime (flushes the writer)
    conn.send(("stopped", None))


# ---------------------------------------------------------------------------------------------------------------
# The adapter: WebSocket client + webhook receiver -> contract alerts on MQTT


def adapter_main(cfg: dict[str, Any], conn: Connection) -> None:
    """Child process: receive our alerts over WebSocket and webhook, republish them in the contract format."""
    asyncio.run(_adapter(cfg, conn))


async def _adapter(cfg: dict[str, Any], conn: Connection) -> None:
    import paho.mqtt.client as mqtt
    import uvicorn
    import websockets
    from paho.mqtt.enums import CallbackAPIVersion
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-adapter-{os.getpid()}")

    def nodelay(_c: Any, _u: Any, sock: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    client.on_socket_open = nodelay
    client.connect("127.0.0.1", cfg["mqtt_port"])
    client.loop_start()
    counts = dict.fromkeys(("ws_new", "ws_update", "ws_other", "hook_new", "hook_update", "hook_other"), 0)
    counts["hook_bad_signature"] = 0

    def republish(alert: dict[str, Any], topic: str) -> None:
        body = {
            "building": (alert.get("tags") or {}).get("building"),
            "trigger_id": alert.get("trigger_message_id"),
            "ts_sent": time.time(),
        }
        client.publish(topic, json.dumps(body).encode(), qos=0)

    hook = Webhook(cfg["secret"])

    async def webhook_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        status = 204
        try:
            doc = hook.verify(body, headers)
        except WebhookVerificationError:
            counts["hook_bad_signature"] += 1
            status = 400
        else:
            if contract_firing(doc):
                counts[f"hook_{doc['type']}"] += 1
                republish(doc["alert"], HOOK_TOPIC)
            else:
                counts["hook_other"] += 1
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    server = uvicorn.Server(
        uvicorn.Config(
            webhook_app, host="127.0.0.1", port=cfg["hook_port"], log_level="warning", access_log=False, lifespan="off"
        )
    )
    hook_task = asyncio.create_task(server.serve())

    async def ws_loop(ready: asyncio.Event) -> None:
        url = f"ws://127.0.0.1:{cfg['http_port']}/api/v1/alerts/live?key={cfg['key']}"
        async with websockets.connect(url, max_size=None) as ws:
            ready.set()
            async for raw in ws:
                doc = json.loads(raw)
                if contract_firing(doc):
                    counts[f"ws_{doc['type']}"] += 1
                    republish(doc["alert"], WS_TOPIC)
                else:
                    counts["ws_other"] += 1

    ready = asyncio.Event()
    ws_task = asyncio.create_task(ws_loop(ready))
    await asyncio.wait_for(ready.wait(), 10)
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event for "listening")
        await asyncio.sleep(0.02)
    conn.send(("ready", None))
    loop = asyncio.get_running_loop()
    while True:
        op = await loop.run_in_executor(None, conn.recv)
        if op == "stats":
            conn.send(("stats", dict(counts)))
        elif op == "stop":
            break
    ws_task.cancel()
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await ws_task
    await hook_task
    client.loop_stop()
    client.disconnect()
    conn.send(("stopped", None))


class Child:
    """A spawned child process with a command pipe."""

    def __init__(self, target: Any, cfg: dict[str, Any], timeout_s: float = 60.0) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(cfg, child), daemon=True)
        self.proc.start()
        self.ready_info = self.expect("ready", timeout_s)

    def expect(self, kind: str, timeout_s: float) -> Any:
        if not self.conn.poll(timeout_s):
            raise SystemExit(f"child {self.proc.pid} sent no {kind!r} within {timeout_s:.0f} s")
        got, info = self.conn.recv()
        if got != kind:
            raise SystemExit(f"child {self.proc.pid}: expected {kind!r}, got {got!r}")
        return info

    def ask(self, op: str, timeout_s: float = 30.0) -> Any:
        self.conn.send(op)
        return self.expect(op if op != "stop" else "stopped", timeout_s)

    def close(self) -> None:
        if self.proc.is_alive():
            # `expect` raises SystemExit when the child does not answer: stopping goes on, terminating it below.
            with contextlib.suppress(Exception, SystemExit):
                self.ask("stop", 20)
            self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


# ---------------------------------------------------------------------------------------------------------------
# Our engine measured with load.py's own step and ladder


def devices_csv(prefix: str, buildings: int) -> str:
    """Every device load.py will use in a step with this prefix: 4 detectors per building, plus the probes."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["id", "kind", "community", "building", "offline_after_s"])
    for b in range(buildings):
        name = f"{prefix}-b{b:05d}"
        for d in range(4):
            w.writerow([f"{name}-d{d}", "smoke", name, name, 86400])
    for tag in ("p", "q", "w"):
        for n in range(1, PROBES_PER_BARRIER + 1):
            name = f"{prefix}{tag}-x{n}"
            for d in (1, 2):
                w.writerow([f"{name}-d{d}", "smoke", name, name, 86400])
    return out.getvalue()


class OurSteps:
    """Wraps load.py's run_step/publish_paced: registers devices first and checks the webhook path too."""

    def __init__(
        self, load: ModuleType, http: httpx.Client, hook_listener: Any, args: argparse.Namespace, node_pid: int = 0
    ) -> None:
        self.load = load
        self.node_pid = node_pid
        self.http = http
        self.hook = hook_listener
        self.args = args
        self.steps: list[dict[str, Any]] = []
        self.register_s: list[float] = []
        self._orig_run_step = load.run_step
        self._orig_publish = load.publish_paced
        self._stamps: dict[int, tuple[float, float]] = {}
        # load.py's find_max and run_step look these up as module globals
        load.__dict__["run_step"] = self.run_step
        load.__dict__["publish_paced"] = self.publish_paced

    def restore(self) -> None:
        self.load.__dict__["run_step"] = self._orig_run_step
        self.load.__dict__["publish_paced"] = self._orig_publish

    def publish_paced(self, *a: Any, **kw: Any) -> Any:
        out = self._orig_publish(*a, **kw)
        self._stamps = out[3]
        return out

    def run_step(self, args: Any, client: Any, listener: Any, rate: float, prefix: str, meter: Any) -> Any:
        t = time.monotonic()
        resp = self.http.post(
            "/api/v1/devices/import",
            content=devices_csv(prefix, args.buildings).encode(),
            headers={"content-type": "text/csv"},
            params={"mode": "all_or_nothing"},
            timeout=120,
        )
        resp.raise_for_status()
        self.register_s.append(time.monotonic() - t)
        # Wait out any backlog of the previous step (a step above capacity can leave minutes of it), so the step's
        # own first probe finds the node idle.
        drained, _ = self.load.barrier(client, listener, f"{prefix}w", timeout_s=self.load.MAX_DRAIN_S)
        if not drained:
            raise SystemExit(f"our node did not drain within {self.load.MAX_DRAIN_S:.0f} s")
        listener.take()
        self.hook.take()
        cpu0 = self.load.cpu_seconds(self.node_pid) if self.node_pid else None
        r = self._orig_run_step(args, client, listener, rate, prefix, meter)
        hook = self.check_webhook(args, rate, prefix, r)  # waits for the webhook path too: its CPU is in the step
        cpu1 = self.load.cpu_seconds(self.node_pid) if self.node_pid else None
        node_cpu_s = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
        self.steps.append({"result": r, "webhook": hook, "node_cpu_s": node_cpu_s})
        self.report(r, hook)
        return r

    def check_webhook(self, args: Any, rate: float, prefix: str, r: Any) -> dict[str, Any]:
        """The same classification as load.py's, on the webhook path (it may trail the WebSocket path a little)."""
        load = self.load
        stream = load.build_stream(
            prefix, args.seed, rate, args.duration, args.warmup, args.pairs, args.temps, args.buildings
        )
        expected = {slot: v for slot, v in stream.expected.items() if slot < r.events}
        records: list[Any] = []
        got: dict[int, float] = {}
        duplicated = unexpected = 0
        ours = f"{prefix}-e"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            records.extend(self.hook.take())
            seen = set()
            for _mono, _wall, raw in records:
                trigger = str(json.loads(raw).get("trigger_id"))
                if trigger.startswith(ours) and trigger[len(ours) :].isdigit():
                    seen.add(int(trigger[len(ours) :]))
            if set(expected) <= seen:
                break
            time.sleep(0.1)
        for recv_mono, _wall, raw in records:
            alert = json.loads(raw)
            trigger = str(alert.get("trigger_id"))
            if not trigger.startswith(ours):
                continue
            slot = int(trigger[len(ours) :]) if trigger[len(ours) :].isdigit() else -1
            if slot in expected and alert.get("building") == expected[slot][0]:
                if slot in got:
                    duplicated += 1
                else:
                    got[slot] = recv_mono
            elif alert.get("building") in stream.smoke_buildings:
                duplicated += 1
            else:
                unexpected += 1
        lat = [(got[s] - self._stamps[s][0]) * 1000 for s in sorted(got) if s in self._stamps]
        pct = load.percentile
        return {
            "expected": len(expected),
            "received": len(got),
            "missed": len(expected) - len(got),
            "duplicated": duplicated,
            "unexpected": unexpected,
            "p50_ms": _r(pct(lat, 50)),
            "p99_ms": _r(pct(lat, 99)),
            "p99_9_ms": _r(pct(lat, 99.9)),
        }

    def report(self, r: Any, hook: dict[str, Any]) -> None:
        why = r.failure(self.args.p99_limit_ms, True)
        print(
            f"  safecity {r.target_rate:>7.0f}/s achieved {r.achieved_rate:>7.0f}/s | WebSocket: expected {r.expected} "
            f"received {r.received} missed {r.missed} dup {r.duplicated} unexpected {r.unexpected} "
            f"p50 {fmt(r.pct(50))} p99 {fmt(r.pct(99))} p99.9 {fmt(r.pct(99.9))} ms | webhook: missed "
            f"{hook['missed']} dup {hook['duplicated']} p50 {fmt(hook['p50_ms'])} p99 {fmt(hook['p99_ms'])} ms | "
            f"{'clean' if why is None else 'NOT clean: ' + why} | cpu "
            + ", ".join(f"{k} {v['cpu_pct']}%" for k, v in r.resources.items()),
            flush=True,
        )


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def load_args(load: ModuleType, opts: argparse.Namespace, **over: Any) -> argparse.Namespace:
    """load.py's own defaults, with the benchmark's stream options."""
    ns = argparse.Namespace(
        seed=1,
        duration=opts.duration,
        warmup=opts.warmup,
        pairs=opts.pairs,
        temps=opts.temps,
        buildings=opts.buildings,
        drain_timeout=load.MAX_DRAIN_S,  # above capacity our node drains slowly: measure it rather than abort
        start_rate=opts.our_find_max_start,
        max_rate=opts.find_max_cap,
        growth=1.5,
        refine=opts.refine,
        p99_limit_ms=1000.0,
        backlog_check=True,
        budget=opts.find_max_budget,
        peer="safecity",
    )
    for k, v in over.items():
        setattr(ns, k, v)
    return ns


def stream_opts(opts: argparse.Namespace) -> list[str]:
    return [
        f"--duration={opts.duration}",
        f"--warmup={opts.warmup}",
        f"--pairs={opts.pairs}",
        f"--temps={opts.temps}",
        f"--buildings={opts.buildings}",
    ]


# ---------------------------------------------------------------------------------------------------------------
# Node-RED, measured by the kit's load.py as a subprocess


def run_kit_load(
    kit: Path,
    port: int,
    peer: str,
    watch: Mapping[str, int | None],
    opts: argparse.Namespace,
    extra: list[str],
    timeout_s: float,
) -> dict[str, Any] | None:
    """The kit's load.py, unmodified, as a subprocess against a broker: its step lines echoed, its result line (the
    last) returned; None if it timed out or printed no result."""
    cmd = [
        sys.executable,
        str(kit / "load.py"),
        f"--broker=127.0.0.1:{port}",
        f"--peer={peer}",
        *stream_opts(opts),
        *(f"--watch={name}={pid}" for name, pid in watch.items()),
        *extra,
    ]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False).stdout
    except subprocess.TimeoutExpired:
        return None
    lines = [ln for ln in out.splitlines() if ln.strip()]
    for ln in lines[:-1]:
        if ln.startswith(("step", "find-max")):
            print(f"  {peer} {ln}", flush=True)
    try:
        return json.loads(lines[-1]) if lines else None
    except ValueError:
        return None


class NodeRed:
    """Node-RED through the kit's run-peer.sh, on its own broker."""

    def __init__(self, kit: Path, workdir: Path, ready_timeout_s: float, *, store: bool = True) -> None:
        self.kit = kit
        self.store = store
        self.pid: int | None = None
        self.broker, self.port = start_mosquitto(kit, workdir, "node-red")
        env = dict(os.environ, NODE_RED_READY_TIMEOUT=str(int(ready_timeout_s)))
        self.log = workdir / "node-red-start.log"
        self.starter = subprocess.Popen(
            [
                str(kit / "run-peer.sh"),
                "start",
                f"mqtt://127.0.0.1:{self.port}",
                "--port",
                str(free_port()),
                *(["--store"] if store else []),
            ],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            env=env,
        )

    def wait_ready(self, timeout_s: float) -> bool:
        try:
            rc = self.starter.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        if rc != 0:
            return False
        pid_line = [ln for ln in self.log.read_text().splitlines() if ln.startswith("node-red pid ")]
        self.pid = int(pid_line[-1].split()[-1]) if pid_line else None
        return self.pid is not None

    def run_load(self, opts: argparse.Namespace, extra: list[str], timeout_s: float) -> dict[str, Any] | None:
        watch = {"node-red": self.pid, "mosquitto": self.broker.pid}
        return run_kit_load(self.kit, self.port, "node-red", watch, opts, extra, timeout_s)

    def stored(self) -> dict[str, Any] | None:
        """What the storing flow stored (`run-peer.sh stored`: {"events": N, "alerts": N}), or None."""
        if not self.store:
            return None
        out = subprocess.run(
            [str(self.kit / "run-peer.sh"), "stored"], capture_output=True, text=True, check=False, timeout=60
        ).stdout
        lines = [ln for ln in out.splitlines() if ln.strip().startswith("{")]
        try:
            return json.loads(lines[-1]) if lines else None
        except ValueError:
            return None

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            if self.starter.poll() is None:
                self.starter.terminate()
                self.starter.wait(5)
        subprocess.run([str(self.kit / "run-peer.sh"), "stop"], capture_output=True, check=False, timeout=30)
        if self.broker.poll() is None:
            self.broker.terminate()
            self.broker.wait(5)


def recorded_node_red(kit: Path, *, store: bool = True) -> dict[str, Any]:
    """Node-RED's recorded highest clean rate: the storing flow's (2026-12-03) or the plain flow's (2026-11-29)."""
    path = kit / (RECORDED_STORE if store else RECORDED)
    rows = []
    for ln in path.read_text().splitlines():
        if ln.strip().startswith("{"):
            with contextlib.suppress(ValueError):
                rows.append(json.loads(ln))
    fm = [r for r in rows if r.get("max_clean_rate_per_s") is not None]
    return {"max_clean": fm[-1]["max_clean_rate_per_s"] if fm else None, "rows": rows, "file": str(path.name)}


# ---------------------------------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short steps at 5,000/s and at the budget rates, no ladders")
    ap.add_argument("--rates", default=None, help="fixed rates, events/s (default 1000,5000,10000; quick: 5000)")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per step (load.py default 20)")
    ap.add_argument("--warmup", type=float, default=None)
    ap.add_argument("--pairs", type=int, default=None)
    ap.add_argument("--temps", type=int, default=None)
    ap.add_argument("--buildings", type=int, default=None)
    ap.add_argument("--no-node-red", action="store_true", help="skip Node-RED (its recorded figure is used)")
    ap.add_argument("--no-find-max", action="store_true", help="max clean rate = highest clean fixed rate")
    ap.add_argument(
        "--rules", type=Path, default=RULES, help="equal-work rule pack (default: rulepacks/nodered_peer.yaml)"
    )
    ap.add_argument("--rules57", type=Path, default=RULES57, help="second row's pack (default bench/rules_50.yaml)")
    ap.add_argument("--no-rules57", action="store_true", help="measure only the equal-work node")
    ap.add_argument("--find-max-start", type=float, default=None, help="first rate of Node-RED's ladder")
    ap.add_argument("--our-find-max-start", type=float, default=None, help="first rate of our ladder")
    ap.add_argument("--find-max-cap", type=float, default=50_000.0)
    ap.add_argument("--find-max-budget", type=float, default=None, help="seconds per ladder")
    ap.add_argument("--refine", type=int, default=None)
    ap.add_argument(
        "--database-url",
        default=None,
        help="our node's database, e.g. postgresql://postgres@127.0.0.1/bench_alerts (an empty one; default: SQLite)",
    )
    ap.add_argument(
        "--slow-callback-ms",
        type=float,
        default=None,
        help="diagnosis: log every step of the node's event loop longer than this (asyncio debug mode, slower)",
    )
    ap.add_argument("--workdir", default=None, help="keep the SQLite file and logs here (default: a temp dir)")
    opts = ap.parse_args(argv)
    quick = opts.quick
    defaults = {
        "duration": 2.0 if quick else 20.0,
        "warmup": 0.5 if quick else 2.0,
        "pairs": 50 if quick else 300,
        "temps": 20 if quick else 100,
        "buildings": 1000 if quick else 5000,
        "find_max_start": 5_000.0,
        "our_find_max_start": 2_000.0 if quick else 1_000.0,
        "find_max_budget": 5.0 if quick else 600.0,
        "refine": 0 if quick else 2,
    }
    for k, v in defaults.items():
        if getattr(opts, k) is None:
            setattr(opts, k, v)
    if opts.rates is None:
        opts.rates = "5000" if quick else "1000,5000,10000"
    if quick:
        opts.no_find_max = True
    opts.rate_list = [float(r) for r in opts.rates.split(",") if r.strip()]
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    began = time.monotonic()
    kit = peer_dir()
    if not (kit / "load.py").is_file():
        print(json.dumps({"error": f"Node-RED kit not found at {kit}"}))
        return 2
    load = import_load(kit / "load.py")
    workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="bench-alerts-"))
    workdir.mkdir(parents=True, exist_ok=True)
    load1 = os.getloadavg()[0]
    print(
        f"bench/alerts.py: {os.cpu_count()} cores, load average {load1:.2f} at start; rules {opts.rules.name}; "
        f"steps {opts.duration:g}s + {opts.warmup:g}s warm-up, {opts.pairs} pairs + {opts.temps} temps per step, "
        f"{opts.buildings} buildings; workdir {workdir}",
        flush=True,
    )
    node_red: NodeRed | None = None
    if not opts.no_node_red:
        node_red = NodeRed(kit, workdir, ready_timeout_s=20 if opts.quick else 90)
    cleanup: list[Any] = []
    try:
        result = run(opts, load, kit, workdir, node_red, cleanup)
    except SystemExit as err:  # a node that never drains, a child that never starts: still one JSON line
        if not isinstance(err.code, str):
            raise
        print(f"bench/alerts.py: {err.code}", file=sys.stderr, flush=True)
        keys = ("rate_per_s", "p50_ms", "p99_ms", "missed", "duplicated", "max_clean_rate_per_s")
        result = {**dict.fromkeys(keys), "error": err.code}
        result.update(node_red_max_clean_rate_per_s=None, node_red_source=None, ratio_to_node_red=None)
    finally:
        for item in reversed(cleanup):
            with contextlib.suppress(Exception, SystemExit):  # the last line must stay the JSON result
                item()
        if node_red is not None:
            node_red.stop()
    result["wall_s"] = round(time.monotonic() - began, 1)
    result["load_avg_1m"] = [round(load1, 2), round(os.getloadavg()[0], 2)]
    if max(result["load_avg_1m"]) > (os.cpu_count() or 1):
        result["machine_busy"] = True
        print(f"note: the machine was busy (load average {result['load_avg_1m']}, {os.cpu_count()} cores)")
    print(json.dumps(result), flush=True)
    return 0


def run(
    opts: argparse.Namespace,
    load: ModuleType,
    kit: Path,
    workdir: Path,
    node_red: NodeRed | None,
    cleanup: list[Any],
) -> dict[str, Any]:
    # --- Node-RED first, storing every event (its own broker; our nodes are not started yet)
    nr_rows: dict[float, dict[str, Any]] = {}
    nr_max: float | None = None
    nr_source = "recorded"
    nr_note = None
    nr_stored: dict[str, Any] | None = None
    # Quick: Node-RED storing also runs the equal-work budget step (1.5x its recorded rate). Its recorded rate comes
    # from another machine; where it is clean at that rate too, the quick run cannot show the ratio (below).
    check_rate = budget_steps(recorded_node_red(kit)["max_clean"])[0][0] if opts.quick else None
    if node_red is not None and node_red.wait_ready(20 if opts.quick else 120):
        print(f"node-red pid {node_red.pid} ready on its broker :{node_red.port} (--store)", flush=True)
        step_timeout = (opts.duration + opts.warmup) * 3 + 40
        for rate in opts.rate_list + ([check_rate] if check_rate else []):
            row = node_red.run_load(opts, [f"--rate={rate}"], step_timeout)
            if row is not None:
                nr_rows[rate] = row
        if not opts.quick and not opts.no_find_max:
            row = node_red.run_load(
                opts,
                ["--find-max", f"--start-rate={opts.find_max_start}", f"--budget={opts.find_max_budget}"],
                opts.find_max_budget + 300,
            )
            if row is not None and row.get("max_clean_rate_per_s") is not None:
                nr_max = row["max_clean_rate_per_s"]
                nr_source = "measured"
        nr_stored = node_red.stored()
        node_red.stop()
    elif node_red is not None:
        nr_note = "Node-RED did not start in time; recorded figures used"
        print(nr_note, flush=True)
    if nr_max is None:
        rec = recorded_node_red(kit)
        nr_max = rec["max_clean"]
        nr_note = nr_note or f"highest clean rate recorded in {rec['file']} (storing flow), not measured in this run"
        print(f"node-red (storing) highest clean rate: {nr_max}/s recorded, not measured in this run", flush=True)

    # The budget rates: 1.5x Node-RED storing at equal work, Node-RED storing's own with 57 rules (quick: measured
    # there as fixed steps, since a short ladder cannot reach them). A step is counted at the rate load.py achieved,
    # which falls a little short of its target (11,386/s for 11,391/s), so the steps aim PACING_MARGIN above.
    budget_rate = round(RATIO_BUDGET * nr_max)
    extra, extra57 = budget_steps(nr_max) if opts.quick else ([], [])
    # --- ours at equal work (the two contract rules, every event stored), with the alert CPU and storm steps
    ours = measure_ours(opts, load, kit, workdir, opts.rules, "equal", alert_steps=True, extra_rates=extra)
    # --- ours with the 57-rule pack, as a second row
    ours57 = None
    if not opts.no_rules57:
        ours57 = measure_ours(opts, load, kit, workdir, opts.rules57, "rules57", alert_steps=False, extra_rates=extra57)

    print("\n| rate /s | engine | p50 ms | p99 ms | p99.9 ms | missed | dup | webhook p50 / p99 ms | CPU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, m in (("SafeCity, 2 rules", ours), ("SafeCity, 57 rules", ours57)):
        if m is None:
            continue
        for s in m["fixed"]:
            r, h = s["result"], s["webhook"]
            print(
                f"| {r.target_rate:.0f} | {label} | {fmt(r.pct(50))} | {fmt(r.pct(99))} | {fmt(r.pct(99.9))} | "
                f"{r.missed + h['missed']} | {r.duplicated + h['duplicated']} | {fmt(h['p50_ms'])} / "
                f"{fmt(h['p99_ms'])} | {r.resources['safecity node']['cpu_pct']}% |"
            )
    for rate, nr in nr_rows.items():
        cpu = (nr.get("resources") or {}).get("node-red", {}).get("cpu_pct")
        print(
            f"| {rate:.0f} | Node-RED storing | {nr['p50_ms']} | {nr['p99_ms']} | {nr.get('max_ms')} (max) | "
            f"{nr['missed']} | {nr['duplicated']} | - | {cpu}% |"
        )
    our_max = ours["max_clean"]
    ratio = round(our_max / nr_max, 2) if nr_max else None
    max57 = ours57["max_clean"] if ours57 else None
    print(
        f"highest clean rate: SafeCity {our_max:.0f}/s at equal work ({ours['source']}), "
        + (f"{max57:.0f}/s with 57 rules, " if max57 is not None else "")
        + f"Node-RED storing {nr_max}/s ({nr_source}); ratio {ratio}"
    )
    cpu_step = ours["alert_cpu"]
    if cpu_step:
        print(
            f"alert CPU: {cpu_step['alert_cpu_ms']} ms a delivered alert ({cpu_step['alerts']} alerts more in the hot "
            f"step, {cpu_step['extra_cpu_s']} s of node CPU more)"
        )
    storm_step = ours["storm"]
    if storm_step:
        print(f"storm: {json.dumps(storm_step)}")
    top = ours["fixed"][-1] if ours["fixed"] else None
    budget = {
        "ratio_to_node_red_store": {
            "need": RATIO_BUDGET,
            "got": ratio,
            "met": ratio is not None and ratio >= RATIO_BUDGET,
        },
        "alert_cpu_ms": {
            "need": ALERT_CPU_BUDGET_MS,
            "got": cpu_step["alert_cpu_ms"] if cpu_step else None,
            # A figure at or under zero is the noise of a short step, not a met budget.
            "met": bool(cpu_step and cpu_step["clean"] and 0 < (cpu_step["alert_cpu_ms"] or 0) < ALERT_CPU_BUDGET_MS),
        },
        "storm": {"met": bool(storm_step and storm_step["clean"])},
    }
    tr = top["result"] if top else None
    th = top["webhook"] if top else {}
    at5000 = None
    if ours57 is not None:
        at5000 = next((s for s in ours57["fixed"] if s["result"].target_rate == 5000.0), None)
    if ours57 is not None:
        p99 = at5000["result"].pct(99) if at5000 else None
        budget["rules57_p99_ms_at_5000"] = {
            "need": P99_BUDGET_MS,
            "got": _r(p99),
            "met": bool(at5000 and ok(at5000, ours57["args"]) and p99 is not None and p99 <= P99_BUDGET_MS),
        }
        budget["rules57_max_clean_rate_per_s"] = {"need": nr_max, "got": _r(max57), "met": (max57 or 0) >= nr_max}
    nr_check = nr_rows.get(check_rate) if check_rate else None
    if nr_check is not None and node_red_clean(nr_check, ours["args"].p99_limit_ms):
        note = (
            f"Node-RED storing was clean at {check_rate:.0f}/s too: on this machine its recorded rate understates it, "
            "so a quick run cannot show the rates against it; run the full benchmark"
        )
        print(f"note: {note}", flush=True)
        for key in ("ratio_to_node_red_store", "rules57_max_clean_rate_per_s"):
            if key in budget:
                budget[key].update(met=False, note=note)
    # Every message received over MQTT is an event stored once (the load sends no bad input).
    stored_all = all(m["node"]["stored_from_mqtt"] == m["node"]["mqtt_received"] for m in (ours, ours57) if m)
    budget["every_event_stored"] = {"met": stored_all}
    budget["pass"] = all(v["met"] for v in budget.values())
    print(f"budget: {json.dumps(budget)}", flush=True)
    return {
        "budget": budget,
        "budget_rate_per_s": budget_rate,
        "rate_per_s": _r(tr.achieved_rate) if tr else None,
        "target_rate_per_s": tr.target_rate if tr else None,
        "p50_ms": _r(tr.pct(50)) if tr else None,
        "p99_ms": _r(tr.pct(99)) if tr else None,
        "p99_9_ms": _r(tr.pct(99.9)) if tr else None,
        "missed": (tr.missed + th["missed"]) if tr else None,
        "duplicated": (tr.duplicated + th["duplicated"]) if tr else None,
        "unexpected": (tr.unexpected + th["unexpected"]) if tr else None,
        "webhook_p50_ms": th.get("p50_ms"),
        "webhook_p99_ms": th.get("p99_ms"),
        "max_clean_rate_per_s": _r(our_max),
        "max_clean_source": ours["source"],
        "rules57_max_clean_rate_per_s": _r(max57) if max57 is not None else None,
        "p99_ms_at_5000": _r(at5000["result"].pct(99)) if at5000 else None,
        "p99_ms_at_5000_clean": ok(at5000, ours57["args"]) if at5000 and ours57 else None,
        "node_red_store_max_clean_rate_per_s": nr_max,
        "node_red_max_clean_rate_per_s": nr_max,
        "node_red_flow": "flow-store.json (run-peer.sh --store)",
        "node_red_source": nr_source,
        "node_red_note": nr_note,
        "ratio_to_node_red_store": ratio,
        "ratio_to_node_red": ratio,
        "alert_cpu_ms": cpu_step["alert_cpu_ms"] if cpu_step else None,
        "alert_cpu": cpu_step,
        "storm": storm_step,
        "rates": [row_of_step(s, ours["args"], nr_rows) for s in ours["fixed"]],
        "rates57": [row_of_step(s, ours57["args"], {}) for s in ours57["fixed"]] if ours57 else None,
        "ladder": ours["ladder"],
        "ladder57": ours57["ladder"] if ours57 else None,
        "broker_drop_notices": sum(m["drops"] for m in (ours, ours57) if m),
        "stored_events": ours["node"]["stored_from_mqtt"],
        "stored_events_rules57": ours57["node"]["stored_from_mqtt"] if ours57 else None,
        "mqtt_received": ours["node"]["mqtt_received"],
        "mqtt_received_rules57": ours57["node"]["mqtt_received"] if ours57 else None,
        "node_red_stored_events": nr_stored.get("events") if nr_stored else None,
        "node_red_stored_alerts": nr_stored.get("alerts") if nr_stored else None,
        "rules": ours["node"]["rules"],
        "rules57": ours57["node"]["rules"] if ours57 else None,
        "rules_file": opts.rules.name,
        "quick": opts.quick,
    }


def row_of_step(s: dict[str, Any], args: argparse.Namespace, nr_rows: dict[float, dict[str, Any]]) -> dict[str, Any]:
    """One fixed-rate step of ours (and Node-RED's at that rate) for the JSON line."""
    r = s["result"]
    return {
        "target": r.target_rate,
        "safecity": {
            "rate": _r(r.achieved_rate),
            "p50_ms": _r(r.pct(50)),
            "p99_ms": _r(r.pct(99)),
            "p99_9_ms": _r(r.pct(99.9)),
            "missed": r.missed,
            "duplicated": r.duplicated,
            "clean": ok(s, args),
            "webhook": s["webhook"],
            "cpu_pct": r.resources["safecity node"]["cpu_pct"],
        },
        "node_red": {
            k: nr_rows[r.target_rate].get(k)
            for k in ("rate_per_s", "p50_ms", "p99_ms", "missed", "duplicated", "clean")
        }
        if r.target_rate in nr_rows
        else None,
    }


def measure_ours(
    opts: argparse.Namespace,
    load: ModuleType,
    kit: Path,
    workdir: Path,
    rules: Path,
    name: str,
    *,
    alert_steps: bool,
    extra_rates: list[float],
) -> dict[str, Any]:
    """One node of ours with `rules` on its own broker and database: fixed rates, find-max, and (with `alert_steps`)
    the alert CPU step and the alert storm. Everything it started is stopped before it returns."""
    mine: list[Any] = []
    try:
        return _measure_ours(
            opts, load, kit, workdir, rules, name, mine, alert_steps=alert_steps, extra_rates=extra_rates
        )
    finally:
        for item in reversed(mine):
            with contextlib.suppress(Exception, SystemExit):
                item()


def _measure_ours(
    opts: argparse.Namespace,
    load: ModuleType,
    kit: Path,
    workdir: Path,
    rules: Path,
    name: str,
    cleanup: list[Any],
    *,
    alert_steps: bool,
    extra_rates: list[float],
) -> dict[str, Any]:
    broker, mqtt_port = start_mosquitto(kit, workdir, f"safecity-{name}")
    cleanup.append(lambda: stop_process(broker))
    http_port, hook_port = free_port(), free_port()
    db_url = opts.database_url or f"sqlite+aiosqlite:///{workdir / f'alerts-{name}.db'}"
    if opts.database_url:
        if name != "equal":  # the second node gets a database of its own: <name>_<node>
            db_url = f"{opts.database_url}_{name}"
        ensure_pg_database(db_url)
    node = Child(
        node_main,
        {
            "db_url": db_url,
            "mqtt_port": mqtt_port,
            "http_port": http_port,
            "rules": str(rules),
            "slow_callback_ms": opts.slow_callback_ms,
        },
    )
    cleanup.append(node.close)
    admin_key = node.ready_info
    print(
        f"safecity node ({name}: {rules.name}) pid {node.proc.pid} on its broker :{mqtt_port}, HTTP :{http_port}",
        flush=True,
    )
    http = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", headers={"X-API-Key": admin_key})
    cleanup.append(http.close)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    resp = http.post(
        "/api/v1/subscriptions",
        json={
            "name": "bench webhook",
            "channel": "webhook",
            "target": f"http://127.0.0.1:{hook_port}/hook",
            "secret": secret,
        },
    )
    resp.raise_for_status()
    adapter = Child(
        adapter_main,
        {"mqtt_port": mqtt_port, "http_port": http_port, "hook_port": hook_port, "key": admin_key, "secret": secret},
    )
    cleanup.append(adapter.close)
    tag = f"A{int(time.time() * 10) % 10**7:07d}"
    listener = load.Listener("127.0.0.1", mqtt_port, WS_TOPIC, tag)
    cleanup.append(listener.close)
    hook_listener = load.Listener("127.0.0.1", mqtt_port, HOOK_TOPIC, tag + "w")
    cleanup.append(hook_listener.close)
    client = load.new_client(f"load-events-{tag}")
    load.connect(client, "127.0.0.1", mqtt_port)
    cleanup.append(client.disconnect)
    meter = load.CpuMeter(
        {
            "safecity node": node.proc.pid or 0,
            "adapter": adapter.proc.pid or 0,
            "mosquitto": broker.pid,
            "load.py": os.getpid(),
            "load.py listeners": listener.proc.pid or 0,
        }
    )
    args = load_args(load, opts)
    steps = OurSteps(load, http, hook_listener, args, node_pid=node.proc.pid or 0)
    cleanup.append(steps.restore)
    print(f"  safecity ({name}) fixed rates:", flush=True)
    fixed: list[dict[str, Any]] = []
    for n, rate in enumerate([*opts.rate_list, *extra_rates], start=1):
        load.run_step(args, client, listener, rate, f"{tag}s{n}", meter)
        fixed.append(steps.steps[-1])
    ladder_steps: list[dict[str, Any]] = []
    if not opts.no_find_max:
        print(
            f"  safecity ({name}) find-max from {opts.our_find_max_start:.0f}/s (budget {opts.find_max_budget:.0f} s):",
            flush=True,
        )
        before = len(steps.steps)
        load.find_max(args, client, listener, f"{tag}m", meter)
        ladder_steps = steps.steps[before:]
    cpu_step = storm_step = None
    if alert_steps:
        cpu_step = alert_cpu_step(opts, load, steps, client, listener, f"{tag}c", meter)
        storm_step = alert_storm(load, http, client, listener, hook_listener, f"{tag}t")
    node_stats = node.ask("stats")
    adapter_stats = adapter.ask("stats")
    clean = [s["result"].achieved_rate for s in [*fixed, *ladder_steps] if ok(s, args)]
    print(
        f"  safecity ({name}): stored {node_stats['stored']} of {node_stats['mqtt_received']} messages received; "
        f"engine handled {node_stats['warning_handled']}, max backlog {node_stats['engine_max_backlog']}; "
        f"rules {node_stats['rules']}; adapter {adapter_stats}",
        flush=True,
    )
    return {
        "fixed": fixed,
        "args": args,
        "max_clean": max(clean, default=0.0),
        "source": "find-max" if ladder_steps else "fixed rates",
        "ladder": [
            {
                "rate": _r(s["result"].achieved_rate),
                "p99_ms": _r(s["result"].pct(99)),
                "clean": ok(s, args),
                "why": s["result"].failure(args.p99_limit_ms, True),
            }
            for s in ladder_steps
        ],
        "alert_cpu": cpu_step,
        "storm": storm_step,
        "node": node_stats,
        "adapter": adapter_stats,
        "drops": (workdir / f"mosquitto-safecity-{name}.log").read_text().count("messages are being dropped"),
    }


def ensure_pg_database(url: str) -> None:
    """Create the PostgreSQL database of `url` when it does not exist (the second node's own database)."""
    import asyncio as aio

    import asyncpg

    base, dbname = url.rsplit("/", 1)
    admin = base.replace("postgresql+asyncpg://", "postgresql://") + "/postgres"

    async def create() -> None:
        conn = await asyncpg.connect(admin)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", dbname):
                await conn.execute(f'CREATE DATABASE "{dbname}"')
        finally:
            await conn.close()

    aio.run(create())


def alert_cpu_step(
    opts: argparse.Namespace,
    load: ModuleType,
    steps: OurSteps,
    client: Any,
    listener: Any,
    prefix: str,
    meter: Any,
) -> dict[str, Any]:
    """CPU of the node per delivered alert (WebSocket + one webhook + stored): two steps at the same modest event
    rate, one with many alerts (2,000 high temps) and one with few (10); the node's extra CPU over the extra alerts.

    Both steps run the same number of events through the same path (MQTT, pipeline, rules, store), so what differs
    is the alerts' work: engine firing, bus, alert row, outbox row, WebSocket push, signed webhook, delivered mark
    and stamp. CPU is the node process's utime + stime (all its threads) over each whole step, drains included.
    """
    rate = 2_000.0 if opts.quick else 1_000.0  # quick: the same alerts in half the time
    duration = 5.0 if opts.quick else 20.0
    many = 1_000 if opts.quick else 2_000
    rounds = 2  # base, hot, base, hot: drift of the machine's load falls on both sides
    base_args = argparse.Namespace(**{**vars(steps.args), "duration": duration, "pairs": 30, "temps": 10})
    hot_args = argparse.Namespace(**{**vars(base_args), "temps": many})
    print(f"  alert CPU step: {rate:.0f}/s for {duration:g} s, 10 then {many} high temps, {rounds} rounds:", flush=True)
    # A base step first, not counted: after the ladder's overload steps the node catches up (the WAL's checkpoints,
    # the collector, timers), and a first counted base step carried that (seventh session: -0.196 ms an alert).
    load.run_step(base_args, client, listener, rate, f"{prefix}bw", meter)
    bases: list[dict[str, Any]] = []
    hots: list[dict[str, Any]] = []
    for n in range(rounds):
        load.run_step(base_args, client, listener, rate, f"{prefix}b{n}", meter)
        bases.append(steps.steps[-1])
        load.run_step(hot_args, client, listener, rate, f"{prefix}h{n}", meter)
        hots.append(steps.steps[-1])
    # An alert is counted once: it is one WebSocket message, one webhook and one stored row.
    alerts = sum(h["result"].received for h in hots) - sum(b["result"].received for b in bases)
    extra = sum(h["node_cpu_s"] or 0.0 for h in hots) - sum(b["node_cpu_s"] or 0.0 for b in bases)
    clean = all(ok(b, base_args) for b in bases) and all(ok(h, hot_args) for h in hots)
    events = sum(b["result"].events for b in bases)
    return {
        "alert_cpu_ms": round(extra / alerts * 1000, 3) if alerts > 0 else None,
        "alerts": alerts,
        "extra_cpu_s": round(extra, 3),
        "event_rate_per_s": rate,
        "duration_s": duration,
        "rounds": rounds,
        "event_cpu_us_base": round(sum(b["node_cpu_s"] or 0.0 for b in bases) / events * 1e6, 1) if events else None,
        "hot": [
            {"alerts": h["result"].received, "node_cpu_s": _r(h["node_cpu_s"]), "webhook": h["webhook"]} for h in hots
        ],
        "base": [{"alerts": b["result"].received, "node_cpu_s": _r(b["node_cpu_s"])} for b in bases],
        "clean": clean,
    }


def alert_storm(
    load: ModuleType, http: httpx.Client, client: Any, listener: Any, hook_listener: Any, prefix: str
) -> dict[str, Any]:
    """A building-wide fire alarm: `STORM_DETECTORS` detectors of one building alarm (temp 80) within
    `STORM_WINDOW_S` seconds. Each is a high-temp alert (and the second completes the smoke pair); every one must
    reach both the WebSocket and the webhook path. Latency: publish returned -> the adapter's republish received."""
    building = f"{prefix}-storm"
    devices = devices_csv(prefix, 0).splitlines()
    devices += [f"{building}-d{i},smoke,{building},{building},86400" for i in range(STORM_DETECTORS)]
    http.post(
        "/api/v1/devices/import",
        content=("\n".join(devices) + "\n").encode(),
        headers={"content-type": "text/csv"},
        params={"mode": "all_or_nothing"},
        timeout=120,
    ).raise_for_status()
    drained, _ = load.barrier(client, listener, f"{prefix}w", timeout_s=load.MAX_DRAIN_S)
    if not drained:
        raise SystemExit("our node did not drain before the storm")
    time.sleep(0.5)
    listener.take()
    hook_listener.take()
    stamps: dict[str, float] = {}
    start = time.monotonic() + 0.1
    for i in range(STORM_DETECTORS):
        due = start + i * STORM_WINDOW_S / STORM_DETECTORS
        while (wait := due - time.monotonic()) > 0:
            client.loop(timeout=min(wait, 0.005))
        trigger = f"{prefix}-t{i}"
        body = {"id": trigger, "device": f"{building}-d{i}", "building": building, "alarm": True}
        body.update(ts=time.time(), temp=80.0)
        client.publish(f"safecity/{building}/smoke/{building}-d{i}", json.dumps(body).encode(), qos=0)
        stamps[trigger] = time.monotonic()
    while client.want_write():
        client.loop_write()
    got: dict[str, dict[str, float]] = {"websocket": {}, "webhook": {}}
    firings = {"websocket": 0, "webhook": 0}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and min(len(g) for g in got.values()) < STORM_DETECTORS:
        client.loop(timeout=0.05)
        for path, source in (("websocket", listener), ("webhook", hook_listener)):
            for mono, _wall, raw in source.take():
                trigger = str(json.loads(raw).get("trigger_id"))
                if trigger in stamps:
                    firings[path] += 1
                    got[path].setdefault(trigger, mono)
    time.sleep(1.0)  # late repeats would be duplicates
    for path, source in (("websocket", listener), ("webhook", hook_listener)):
        for mono, _wall, raw in source.take():
            trigger = str(json.loads(raw).get("trigger_id"))
            if trigger in stamps:
                firings[path] += 1
                got[path].setdefault(trigger, mono)
    out: dict[str, Any] = {"detectors": STORM_DETECTORS, "window_s": STORM_WINDOW_S}
    for path, seen in got.items():
        lat = sorted((mono - stamps[t]) * 1000 for t, mono in seen.items())
        out[path] = {
            "received": len(seen),
            "missed": STORM_DETECTORS - len(seen),
            # 500 high temps + 1 smoke pair (its trigger is also a high temp): more is a duplicate
            "duplicated": max(0, firings[path] - STORM_DETECTORS - 1),
            "p50_ms": _r(load.percentile(lat, 50)),
            "p99_ms": _r(load.percentile(lat, 99)),
            "max_ms": _r(lat[-1]) if lat else None,
        }
    out["clean"] = all(
        out[p]["missed"] == 0 and out[p]["duplicated"] == 0 and (out[p]["p99_ms"] or 1e9) < 1000
        for p in ("websocket", "webhook")
    )
    return out


def budget_steps(node_red_max: float) -> tuple[list[float], list[float]]:
    """Quick mode's budget steps, each aimed PACING_MARGIN above the rate it must reach: equal work at 1.5x Node-RED
    storing's highest clean rate, the 57-rule node at that rate itself."""
    return [float(math.ceil(round(RATIO_BUDGET * node_red_max) * PACING_MARGIN))], [
        float(math.ceil(node_red_max * PACING_MARGIN))
    ]


def node_red_clean(row: dict[str, Any], p99_limit_ms: float) -> bool:
    """load.py's clean criteria applied to Node-RED's step summary (its JSON line)."""
    if row.get("missed") or row.get("duplicated") or row.get("unexpected") or row.get("p99_ms") is None:
        return False
    thirds = row.get("p50_thirds_ms")
    backlog = thirds is not None and None not in thirds and thirds[1] > 2 * thirds[0] + 50
    return bool(row["p99_ms"] <= p99_limit_ms and not backlog)


def ok(step: dict[str, Any], args: argparse.Namespace) -> bool:
    """Clean by load.py's criteria on the WebSocket path, and nothing missed or duplicated on the webhook path."""
    h = step["webhook"]
    return step["result"].failure(args.p99_limit_ms, True) is None and not (
        h["missed"] or h["duplicated"] or h["unexpected"]
    )


if __name__ == "__main__":
    sys.exit(main())
