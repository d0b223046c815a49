# Runs on CPython (host): the daemon's over-the-air app updates — one job per reader, chunks sent between taps.
"""Over-the-air app updates (protocol/README.md "App updates over the link").

``Updates`` keeps the active jobs of ``fleet_updates`` (host/store/fleet.py) in RAM and drives
them from a thread of its own: every second it re-reads the jobs on the read-only connection
and lets a rollout's second wave start (canaries healthy); every few ms it sends what a job
needs next. A job sends UPDATE_BEGIN (again every ``RESEND_S`` without an answer: the reader
answers with the chunks it holds, which is also how a transfer resumes), then one
UPDATE_CHUNK per UPDATE_STATUS, the one the reader asks for. A chunk goes only while no tap
of that reader is in flight (``InflightGate.busy``), so a transfer never delays a decision;
the frames go out through the reader's link send (non-blocking), and the job's progress is
written through the writer without waiting for it (one small write a second at most).

A firmware bundle (``kind`` firmware: one MicroPython image) is sent as the image alone
(UPDATE_BEGIN kind 1): the reader writes it to its next OTA partition.

A job is ``staged`` when the reader checked every hash, ``healthy`` when the reader reports
the new version (the app's, or for a firmware update the firmware's) in a STATUS after its
restart, off trial, ``rolled_back`` on an ``update_rollback``
EVENT, ``failed`` when the reader refused the bundle.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from host.site.inflight import InflightGate
from host.site.registry import DeviceState, Registry
from host.site.writer import Writer
from host.store import fleet
from host.store import site_state as store
from protocol import codes
from protocol import ota

log = logging.getLogger("tapkiosk.update")

RESEND_S = 2.0     # no UPDATE_STATUS for this long: UPDATE_BEGIN again (the reader says where it is)
PUMP_S = 0.02      # how often deferred chunks are looked at
POLL_S = 1.0       # how often the jobs are re-read from the store
FAILURES = {ota.UPD_ERR_BUNDLE_HASH: "bundle hash mismatch", ota.UPD_ERR_MANIFEST: "bad manifest",
            ota.UPD_ERR_FILE_HASH: "file hash mismatch", ota.UPD_ERR_STORAGE: "reader storage"}


@dataclass
class Job:
    """One reader's update, as the daemon drives it."""

    id: int
    device_id: str
    version: str
    blob: bytes
    state: str
    have: int = 0
    want: int | None = None     # chunk the reader asked for, not sent yet
    sent_at: float = 0.0        # when the last frame went (monotonic)
    saved_have: int = -1
    sha: bytes = b""
    kind: int = 0               # UPDATE_BEGIN.kind: 0 app bundle, 1 firmware image

    def __post_init__(self) -> None:
        self.sha = hashlib.sha256(self.blob).digest()

    @property
    def chunks(self) -> int:
        return (len(self.blob) + ota.UPDATE_CHUNK_MAX - 1) // ota.UPDATE_CHUNK_MAX


class Updates:
    """See the module doc."""

    def __init__(self, writer: Writer, registry: Registry, gate: InflightGate,
                 reader: store.Reader, clock: Callable[[], float] = time.time) -> None:
        self.writer = writer
        self.registry = registry
        self.gate = gate
        self.reader = reader
        self.clock = clock
        self._jobs: dict[str, Job] = {}
        self._blobs: dict[str, tuple[int, bytes]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_poll = 0.0

    # ----------------------------------------------------------------- the thread
    def start(self) -> None:
        """Start driving jobs (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tapkiosk-update",
                                            daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(PUMP_S):
            try:
                if time.monotonic() >= self._next_poll:
                    self._next_poll = time.monotonic() + POLL_S
                    self.poll()
                self.pump()
            except Exception:  # noqa: BLE001 - one bad round must not stop the updates
                log.exception("update round failed")

    def poll(self) -> None:
        """Re-read the active jobs; start a rollout's second wave when its canaries are fine."""
        now = int(self.clock())
        self.writer.call(lambda db: fleet.advance_waves(db, now))
        rows = self.reader.run(fleet.active_jobs)
        with self._lock:
            active = {r["device_id"]: r for r in rows}
            for dev in [d for d in self._jobs if d not in active]:
                del self._jobs[dev]
            for dev, r in active.items():
                job = self._jobs.get(dev)
                if job is None or job.id != r["id"]:
                    kind, payload = self._blob(r["bundle"])
                    self._jobs[dev] = Job(r["id"], dev, r["version"], payload, r["state"],
                                          r["have"], kind=kind)
            saves = [(j.id, j.state, j.have) for j in self._jobs.values()
                     if j.state == "sending" and j.have != j.saved_have]
            for j in self._jobs.values():
                j.saved_have = j.have
        for job_id, state, have in saves:
            self._save(job_id, state, have, "")

    def _blob(self, sha: str) -> tuple[int, bytes]:
        got = self._blobs.get(sha)
        if got is None:
            got = self._blobs[sha] = fleet.payload(
                self.reader.run(lambda db: fleet.bundle_blob(db, sha)))
        return got

    def pump(self) -> None:
        """Send what each job needs now: its BEGIN (first, or again after silence), or the
        chunk its reader asked for once no tap of that reader is in flight."""
        now = time.monotonic()
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            st = self.registry.known(job.device_id)
            if st is None or st.send is None or not st.online:
                continue
            if job.state == "pending":
                self._set(job, "sending")
            if job.state != "sending":
                continue
            if now - job.sent_at >= RESEND_S:
                if job.sent_at:
                    log.info("update device=%s job=%d no answer: BEGIN again (resume from the "
                             "reader's count)", job.device_id, job.id)
                job.want = None
                self._send(st, job, ota.UPDATE_BEGIN, {
                    "update_id": job.id, "version": job.version, "size": len(job.blob),
                    "chunks": job.chunks, "sha256": job.sha, "kind": job.kind})
            elif job.want is not None:
                self._chunk(st, job)

    def _chunk(self, st: DeviceState, job: Job) -> None:
        i = job.want
        if i is None or self.gate.busy(st.device_id):
            return  # a tap is being decided: the chunk waits
        job.want = None
        n = ota.UPDATE_CHUNK_MAX
        self._send(st, job, ota.UPDATE_CHUNK, {"update_id": job.id, "index": i,
                                             "data": job.blob[i * n:(i + 1) * n]})

    def _send(self, st: DeviceState, job: Job, ptype: int, fields: dict[str, Any]) -> None:
        job.sent_at = time.monotonic()
        send = st.send
        if send is not None:
            send(self.registry.encode(st, ptype, fields))

    def _set(self, job: Job, state: str, detail: str = "") -> None:
        job.state = state
        self._save(job.id, state, job.have, detail)
        log.info("update device=%s job=%d %s %s", job.device_id, job.id, state, detail)

    def _save(self, job_id: int, state: str, have: int, detail: str) -> None:
        now = int(self.clock())
        self.writer.call(lambda db: fleet.set_job(db, job_id, state, have, detail, now))

    # ----------------------------------------------------------------- frames from readers
    def on_update_status(self, st: DeviceState, f: dict[str, Any]) -> None:
        """The reader's progress: ask for a chunk, staged, or refused."""
        with self._lock:
            job = self._jobs.get(st.device_id)
        if job is None or f["update_id"] != job.id or job.state != "sending":
            return
        s = f["state"]
        if s == ota.UPD_RECEIVING:
            job.have = f["have"]
            job.sent_at = time.monotonic()
            if job.have < job.chunks:
                job.want = job.have
                self._chunk(st, job)
        elif s == ota.UPD_STAGED:
            job.have = job.chunks
            self._set(job, "staged")
        elif s == ota.UPD_FAILED:
            self._set(job, "failed", FAILURES.get(f["code"], f"code {f['code']}"))
        else:
            self._set(job, "failed", "busy: the reader has another update on trial")

    def on_status(self, st: DeviceState, f: dict[str, Any]) -> None:
        """A STATUS: stored; the new version, off trial, makes the job healthy."""
        now = int(self.clock())
        self.writer.call(lambda db: fleet.save_status(db, st.device_id, f, now))
        with self._lock:
            job = self._jobs.get(st.device_id)
        running = f["mpy"] if job is not None and job.kind else f["app"]
        if job is not None and job.state in ("sending", "staged") and running == job.version \
                and not f["trial"]:
            self._set(job, "healthy")

    def on_event(self, st: DeviceState, code: int, text: str) -> None:
        """An ``update_rollback`` EVENT ends the reader's job."""
        if code != codes.EV_UPDATE_ROLLBACK:
            return
        with self._lock:
            job = self._jobs.get(st.device_id)
        if job is not None:
            self._set(job, "rolled_back", text)
        else:
            # The daemon restarted in between: the job is in the store only.
            dev = st.device_id
            now = int(self.clock())
            self.writer.call(lambda db: _rolled_back(db, dev, text, now))


def _rolled_back(db: Any, device_id: str, text: str, now: int) -> None:
    for r in fleet.active_jobs(db):
        if r["device_id"] == device_id:
            fleet.set_job(db, r["id"], "rolled_back", r["have"], text, now)
