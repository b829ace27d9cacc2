"""Keeps the worker processes `cluster up` started on this machine running: one that exits while
the cluster serves is started again (with a growing pause, so a worker that cannot start does
not spin), and the stage watch then loads its slice again. Workers on other machines are kept
by their own service manager (launchd, systemd, or deploy.supervise)."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from deploy.local import LocalWorker, WorkerStartError, restart_local_worker

log = logging.getLogger(__name__)

POLL_S = 0.25
FIRST_PAUSE_S = 0.5
LONGEST_PAUSE_S = 10.0


async def keep_running(workers: list[LocalWorker], on_restart: Callable[[LocalWorker], None] | None = None) -> None:
    """Runs until cancelled; `workers` is updated in place with the restarted processes."""
    pauses = {w.name: FIRST_PAUSE_S for w in workers}
    while True:
        await asyncio.sleep(POLL_S)
        for i, worker in enumerate(workers):
            if worker.process is None or worker.process.poll() is None:
                continue
            code = worker.process.returncode
            pause = pauses[worker.name]
            log.warning("worker %s (pid %d) exited with code %s; starting it again in %.1f s",
                        worker.name, worker.pid, code, pause)
            await asyncio.sleep(pause)
            pauses[worker.name] = min(pause * 2, LONGEST_PAUSE_S)
            try:
                fresh = await asyncio.to_thread(restart_local_worker, worker)
            except WorkerStartError as exc:
                log.error("worker %s did not start again: %s", worker.name, exc)
                continue
            workers[i] = fresh
            pauses[worker.name] = FIRST_PAUSE_S
            log.info("worker %s runs again as pid %d", fresh.name, fresh.pid)
            if on_restart is not None:
                on_restart(fresh)
