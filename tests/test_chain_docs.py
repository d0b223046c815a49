# Runs on CPython (pytest): docs/chain.md tells the truth — its commands run as written, its bridge bridges.
"""The store and join commands of docs/chain.md run in order on a SQLite file standing in for
the chain's database, and its mosquitto bridge configuration carries a reader's topics
between two local brokers (the store's and the central one)."""

from __future__ import annotations

import contextlib
import io
import queue
import re
import shlex
import subprocess
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from conftest import ROOT, free_port, mosquitto_path, wait_until
from host.cli import app as cli

DOC = ROOT / "docs" / "chain.md"


def blocks(kind: str) -> list[list[str]]:
    """The lines of every fenced block of ``kind`` in docs/chain.md."""
    out, cur = [], None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if cur is None and line.strip() == f"```{kind}":
            cur = []
        elif cur is not None and line.strip() == "```":
            out.append(cur)
            cur = None
        elif cur is not None:
            cur.append(line)
    return out


def _norm(text: str) -> str:
    return " ".join(text.split())


def test_store_and_join_commands_run_as_written(tmp_path, monkeypatch):
    steps: list[tuple[str, list[str]]] = []
    for block in blocks("console"):
        for line in block:
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif line.strip():
                steps[-1][1].append(line)
    assert len(steps) >= 12
    monkeypatch.chdir(tmp_path)
    for var in ("TAPKIOSK_DB", "TAPKIOSK_POLICY", "TAPKIOSK_DATA_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)
    for command, expected in steps:
        argv = shlex.split(command)
        if argv[0] == "export":
            name, _, value = argv[1].partition("=")
            monkeypatch.setenv(name, str(tmp_path / Path(value).name))
            continue
        assert argv[0] == "tapkiosk", command
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(argv[1:])
        assert rc == 0, f"$ {command}\nexit {rc}\n{err.getvalue()}"
        got, pos = _norm(out.getvalue()), 0
        for want in expected:
            i = got.find(_norm(want), pos)
            assert i >= 0, f"$ {command}\nexpected: {want!r}\ngot:\n{out.getvalue()}"
            pos = i + len(_norm(want))


class _Mosquitto:
    def __init__(self, path: Path, extra: str = "") -> None:
        self.port = free_port()
        path.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                        f"persistence false\nlog_dest stderr\nlog_type error\n{extra}")
        self.proc = subprocess.Popen([mosquitto_path(), "-c", str(path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def client(self, messages: "queue.Queue[tuple[str, bytes]]", topic: str) -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        c.on_message = lambda _c, _u, m: messages.put((m.topic, m.payload))
        c.connect("127.0.0.1", self.port)
        c.subscribe(topic, qos=1)
        c.loop_start()
        return c

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


@pytest.mark.skipif(mosquitto_path() is None, reason="mosquitto is not installed")
def test_bridge_config_carries_a_readers_topics_both_ways(tmp_path):
    text = DOC.read_text(encoding="utf-8")
    assert re.search(r"<!-- bridge-config.*-->\n```conf\n", text)
    [conf] = blocks("conf")
    central = _Mosquitto(tmp_path / "central.conf")
    bridge = "\n".join(conf).replace("CENTRAL:1883", f"127.0.0.1:{central.port}") + "\n"
    store = None
    clients = []
    try:
        wait_until(lambda: _listening(central.port), 10, what="the central broker")
        store = _Mosquitto(tmp_path / "store.conf", bridge)
        wait_until(lambda: _listening(store.port), 10, what="the store broker")
        at_central, at_store = queue.Queue(), queue.Queue()
        clients.append(central.client(at_central, "tapkiosk/v1/#"))
        clients.append(store.client(at_store, "tapkiosk/v1/+/down"))
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        pub.connect("127.0.0.1", store.port)
        pub.loop_start()
        clients.append(pub)
        down = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        down.connect("127.0.0.1", central.port)
        down.loop_start()
        clients.append(down)

        def bridged(src, q, topic):
            src.publish(topic, b"x", qos=1)
            try:
                return q.get(timeout=0.5) == (topic, b"x")
            except queue.Empty:
                return False

        wait_until(lambda: bridged(pub, at_central, "tapkiosk/v1/W1/up"), 20,
                   what="a reader's up topic at the central broker")
        wait_until(lambda: bridged(down, at_store, "tapkiosk/v1/W1/down"), 20,
                   what="a down topic from the central broker at the store")
    finally:
        for c in clients:
            c.loop_stop()
            c.disconnect()
        if store is not None:
            store.stop()
        central.stop()


def _listening(port: int) -> bool:
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
