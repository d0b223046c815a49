# Runs on CPython (host): the tapkiosk daemon — links + authentication + single writer, until SIGTERM.
"""tapkiosk host daemon (``tapkiosk daemon`` / ``python -m host.daemon``).

Serves any number of readers at once over serial ports (``--serial``, repeatable), one MQTT
broker (``--mqtt``) and a host-attached NFC reader (``--nfc`` with ``--nfc-device``). Every
frame is authenticated by :class:`host.site.service.Service`; every tap is decided by the
engine on the single writer (:class:`host.site.writer.Writer`: one lock, one connection) and
answered only after its transaction committed. SIGTERM or SIGINT: stop accepting, finish
in-flight taps, persist the device state, close the database, exit 0. Bad configuration: one
line on stderr, exit 2.

Logs go to stderr, one line per event (``key=value``); the line ``daemon ready`` says every
link has been started (not that it is up: a link that cannot reach its port or broker says
so at WARNING, and ``tapkiosk_link_up{link}`` is 0).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from host.site.config import DaemonConfig, load_config
from host.site.gctune import settle
from host.errors import HostError, InputError
from host.site.metrics import Metrics
from host.rules.policy import check_stores, load_policy
from host.store.db import is_postgres
from host.store.outage import is_unavailable
from host.store.stores import store_names
from host.store.settings import stored_policy_path
from host.site.service import Service, ServiceConfig
from host.site.outage import outage_for
from host.site.writer import Writer
from host.web.events import EventBus

log = logging.getLogger("tapkiosk.daemon")

#: Global ``tapkiosk`` options this command takes (``tapkiosk --db X daemon`` forwards them).
GLOBAL_OPTIONS = ("--db", "--policy")


class Daemon:
    """The running daemon: writer, service, links and metrics endpoint."""

    def __init__(self, config: DaemonConfig) -> None:
        db = config.db if is_postgres(config.db) else Path(config.db).expanduser()
        if not is_postgres(config.db) and not db.exists() and not db.parent.is_file():
            # A mistyped --db would otherwise start an empty site where every card is unknown.
            # (A path under a file is left to open_db, which names the real problem.)
            raise InputError(f"database {config.db} does not exist; create the site first: "
                             f"tapkiosk --db {config.db} init")
        self.config = config
        self.metrics = Metrics()
        outage = outage_for(config.db, _links(config))
        path, known = _policy_path(str(db), config.policy, outage)
        self.policy = load_policy(path)
        self.writer = Writer(config.db, policy=self.policy, metrics=self.metrics,
                             max_batch=config.max_batch, outage=outage)
        try:   # a policy overriding a store the chain does not have is a configuration error
            check_stores(self.policy, store_names(self.writer.db))
        except InputError:
            self.writer.stop()
            raise
        except Exception as e:  # noqa: BLE001 - re-raised unless the database is unreachable
            if outage is None or not is_unavailable(e):
                self.writer.stop()
                raise
            log.warning("the chain's database is unreachable: the policy's stores are "
                        "checked at the next start")
        if not known:       # the chain's policy is loaded once the database answers
            outage.on_online = self._adopt_stored_policy
        self.bus = EventBus()
        self.service = Service(self.writer, self.metrics, self.policy, ServiceConfig(
            heartbeat_s=config.heartbeat_s, offline_after_s=config.offline_after_s,
            debounce_ms=config.debounce_ms, config_check_s=config.config_check_s),
            bus=self.bus)
        self.web: Any = None
        self.mqtt_events: Any = None
        self.links: list[Any] = []
        self.metrics_port: int | None = None
        self.stopping = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="tapkiosk-tick", daemon=True)

    def _adopt_stored_policy(self) -> None:
        """The database answers after a start without it: load the chain's policy (until
        now the defaults) into everything that decides or configures readers."""
        try:
            path, _known = _policy_path(str(self.config.db), self.config.policy,
                                        self.writer.outage)
            policy = load_policy(path)
        except Exception:  # noqa: BLE001 - the daemon keeps serving with what it has
            log.exception("the chain's policy could not be loaded: the defaults stay")
            return
        self.policy = self.service.policy = self.service.configs.policy = policy
        self.writer.engine.policy = policy
        if self.web is not None:
            self.web.ctx.policy = policy
        log.warning("the chain's database answers: policy %s loaded", path or "(defaults)")

    def start(self) -> "Daemon":
        """Start the writer, the links and the metrics endpoint."""
        c = self.config
        self.writer.start()
        if c.metrics_port is not None:
            try:
                self.metrics_port = self.metrics.serve(c.metrics_port, c.metrics_addr)
            except OSError as e:
                # A port in use is a configuration error (exit 2): restarting will not help.
                self.writer.stop()
                self.service.close()
                raise InputError(f"cannot serve metrics on port {c.metrics_port} "
                                 f"({c.metrics_addr}): {e.strerror}") from None
            log.info("metrics on http://%s:%d/metrics", c.metrics_addr, self.metrics_port)
        # What follows a commit (count, log, events) reaches the reply thread once per batch.
        self.writer.after_job.append(self.service.replies.flush)
        self.service.replies.defer_on(self.writer.holds)
        try:
            self._start_web()
            self._start_links()
        except BaseException:
            # A link that cannot start (e.g. the NFC device is not registered) must not leave
            # the links started before it taking taps with nobody to stop them.
            self._abort_start()
            raise
        self._ticker.start()
        log.info("daemon ready db=%s links=%s", c.db,
                 ",".join(getattr(x, "name", type(x).__name__) for x in self.links) or "-")
        return self

    def _start_web(self) -> None:
        """The HTTP API (``[http]``), over the writer, read-only connections and the bus."""
        c = self.config
        if not c.http.enabled:
            return
        from host.store.readonly import readonly_factory
        from host.web.server import WebServer
        self.web = WebServer(c.http, writer=self.writer, read_db=readonly_factory(c.db),
                             policy=self.policy, bus=self.bus, sales=self.service.sales,
                             readers=self.service)
        try:
            self.web.start()
        except HostError as e:
            self.web = None
            raise InputError(str(e)) from None

    def _stop_web(self) -> None:
        """Stop the HTTP API first: no new sale may be armed while the links go away."""
        if self.web is not None:
            try:
                self.web.stop()
            except Exception:  # noqa: BLE001 - stop the rest anyway
                log.exception("stopping the HTTP API failed")
        if self.mqtt_events is not None:
            self.mqtt_events.stop()

    def _start_links(self) -> None:
        c = self.config
        for url in c.serial:
            from host.site.links.serial import SerialLink
            self.links.append(SerialLink(url, self.service, baudrate=c.baud).start())
        if c.mqtt is not None:
            if c.mqtt_process:
                from host.site.links.mqtt_pipe import MqttPipeLink as MqttLink
            else:
                from host.site.links.mqtt import MqttLink   # type: ignore[assignment]
            link = MqttLink(c.mqtt_host, c.mqtt_port, self.service,
                            client_id=c.mqtt_client_id, username=c.mqtt_user,
                            password=c.mqtt_password, tls=c.mqtt_tls, ca_file=c.mqtt_ca).start()
            self.links.append(link)
            if c.mqtt_process:
                # DECISIONs the thread holding the writer sends go out in one write per
                # batch (and the events below in one write per wake-up of their thread).
                link.defer_on(self.writer.holds)
                self.writer.after_job.insert(0, link.flush)   # the DECISIONs first
            from host.site.links.mqtt_events import EventBatcher
            self.mqtt_events = EventBatcher(self.bus, link.publish_many, publish_events=getattr(
                link, "publish_events", None)).start()
        if c.nfc is not None:
            from host.site.links.nfc import NfcLink
            self.links.append(NfcLink(c.nfc, c.nfc_device or "", self.service).start())

    def _stop_links(self) -> None:
        """Stop every link; one that fails to stop does not keep the others running."""
        for link in self.links:
            try:
                link.stop()
            except Exception:  # noqa: BLE001 - stop the others anyway
                log.exception("stopping %s failed", getattr(link, "name", link))

    def _abort_start(self) -> None:
        """Undo a partial ``start()``: the API, the links already started, then the writer."""
        self._stop_web()
        self.service.stop_accepting()
        self._stop_links()
        self.links.clear()
        self.service.drain(10.0)
        try:
            self.service.flush(wait=True)
        except Exception:  # noqa: BLE001 - the start error is what gets reported
            log.exception("persisting device state failed")
        self.writer.stop()
        self.service.close()
        self.metrics.close()

    def _tick(self) -> None:
        while not self.stopping.wait(1.0):
            try:
                self.service.tick()
            except Exception:  # noqa: BLE001 - housekeeping must never stop the daemon
                log.exception("housekeeping failed")

    def stop(self) -> None:
        """Graceful stop: no new taps, finish in-flight ones, persist state, close the DB."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        log.info("stopping: finishing in-flight taps")
        self._stop_web()
        self.service.stop_accepting()
        self._stop_links()
        if not self.service.drain(10.0):
            log.error("stopping: some taps were still being decided after 10 s")
        for st in self.service.devices():
            self.service.set_online(st, False)
        self.service.flush(wait=True)
        if self._ticker.is_alive():
            self._ticker.join(5.0)
        self.writer.stop()
        self.service.close()
        self.metrics.close()
        log.info("stopped")


def _policy_path(db: str, explicit: str | None, outage: Any) -> tuple[str | None, bool]:
    """(where the policy is, known): ``stored_policy_path``; a chain daemon keeps it in its
    offline snapshot and takes it from there when the chain's database cannot be reached;
    not known when neither can say (the defaults apply meanwhile)."""
    try:
        path = stored_policy_path(db, explicit)
    except Exception as e:  # noqa: BLE001 - re-raised unless the database is unreachable
        if outage is None or not is_unavailable(e):
            raise
        path = outage.journal.setting("policy_path")
        if path is None:
            log.warning("the chain's database is unreachable and no policy location is in "
                        "the offline snapshot: the default policy applies until it answers")
            return None, False
        return path or None, True
    if outage is not None:
        outage.journal.set_setting("policy_path", path or "")
    return path, True


def _links(c: DaemonConfig) -> list[str]:
    """The daemon's reader links, as named in its offline journal's default file name."""
    return ([f"mqtt:{c.mqtt}"] if c.mqtt else []) + [f"serial:{s}" for s in c.serial] + (
        [f"nfc:{c.nfc}"] if c.nfc else [])


def setup_logging(level: str) -> None:
    """One line per event on stderr: time, level, logger, message."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("tapkiosk")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT; 0 on a clean stop, 2 on bad config, 1 on error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config(argv)
    except HostError as e:
        print(f"tapkiosk daemon: error: {e}", file=sys.stderr)
        return e.exit_code
    except SystemExit as e:  # --help
        return int(e.code or 0)
    setup_logging(config.log_level)
    try:
        daemon = Daemon(config)
    except HostError as e:
        print(f"tapkiosk daemon: error: {e}", file=sys.stderr)
        return e.exit_code
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    try:
        daemon.start()
    except HostError as e:
        print(f"tapkiosk daemon: error: {e}", file=sys.stderr)
        return e.exit_code
    settle(daemon.metrics)   # the start-up heap frozen, the GC pauses timed
    try:
        while not stop.wait(0.5):
            pass
    finally:
        daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
