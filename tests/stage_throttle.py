"""Slowing one stage down on purpose, for tests that need a request to outlast its deadline on any
machine: the worker process is stopped (SIGSTOP) most of the time and let run for a moment in
between, so it computes many times slower but still answers health checks and gRPC keepalive
pings well within their deadlines (a worker stopped for good would be found dead instead)."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

import psutil


@contextmanager
def throttled(process: psutil.Process, *, stopped_s: float = 1.0, running_s: float = 0.02) -> Iterator[None]:
    done = threading.Event()

    def toggle() -> None:
        while not done.is_set():
            process.send_signal(signal.SIGSTOP)
            done.wait(stopped_s)
            process.send_signal(signal.SIGCONT)
            done.wait(running_s)

    thread = threading.Thread(target=toggle, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        process.send_signal(signal.SIGCONT)
