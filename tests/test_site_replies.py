"""The reply thread (host/site/replies.py): jobs the writer's thread puts are held until it
flushes them (one hand-off per batch), then run in order; other threads' jobs run at once;
one failing job does not stop the others of its batch."""

from __future__ import annotations

import threading

from conftest import wait_until
from host.site.replies import ReplyThread


def test_jobs_of_the_deferred_thread_wait_for_its_flush_then_run_in_order() -> None:
    r = ReplyThread()
    ran: list[str] = []
    held = threading.Event()
    go = threading.Event()

    def writer() -> None:
        me = threading.get_ident()
        r.defer_on(lambda: threading.get_ident() == me)
        for i in range(5):
            r.put(lambda i=i: ran.append(f"w{i}"))
        r.put(lambda: 1 / 0)                   # logged; the rest of the batch still runs
        r.put(lambda: ran.append("w-last"))
        held.set()
        go.wait(10)
        r.flush()

    t = threading.Thread(target=writer)
    t.start()
    assert held.wait(10)
    r.put(lambda: ran.append("other"))         # another thread: not held
    wait_until(lambda: ran == ["other"], what="the other thread's job")
    go.set()
    t.join(10)
    wait_until(lambda: len(ran) == 7, what="the flushed batch")
    assert ran == ["other", "w0", "w1", "w2", "w3", "w4", "w-last"]
    r.flush()                                  # nothing held: nothing queued
    r.close()


def test_without_a_deferred_thread_every_job_runs_at_once() -> None:
    r = ReplyThread()
    ran: list[int] = []
    for i in range(3):
        r.put(lambda i=i: ran.append(i))
    wait_until(lambda: ran == [0, 1, 2], what="the jobs")
    r.close()


def test_after_batch_runs_once_after_each_batch_on_the_reply_thread() -> None:
    r = ReplyThread()
    ran: list[str] = []
    r.after_batch.append(lambda: ran.append(f"end on_thread={r.on_thread()}"))
    done = threading.Event()

    def writer() -> None:
        me = threading.get_ident()
        r.defer_on(lambda: threading.get_ident() == me)
        for i in range(3):
            r.put(lambda i=i: ran.append(f"w{i}"))
        r.flush()
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    assert done.wait(10)
    t.join(10)
    wait_until(lambda: len(ran) == 4, what="the batch and its end")
    r.put(lambda: ran.append("other"))       # a lone job is a batch of one
    wait_until(lambda: len(ran) == 6, what="the lone job and its end")
    assert ran == ["w0", "w1", "w2", "end on_thread=True", "other", "end on_thread=True"]
    assert not r.on_thread()
    r.close()
