"""How far another process's wall clock is from ours, so that a hop's time can be read off two
clocks: the sender's send time and the receiver's receive time.

NTP's method on Clock round trips: with t0 (our send), t1 and t2 (their receipt and reply) and
t3 (our receipt), the offset is ((t1 - t0) + (t2 - t3)) / 2, off by at most half the round trip.
The sample with the shortest round trip among the recent ones is the most trustworthy, so that
is the one kept. Processes on one machine read the same clock: their offset is exactly zero.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

import grpc

from proto import boltpipe_pb2 as pb

log = logging.getLogger(__name__)

SAMPLES_KEPT = 16
FIRST_BURST = 5
RESYNC_S = 2.0


@dataclass(frozen=True)
class ClockSample:
    offset_ns: int      # their clock - our clock
    round_trip_ns: int  # time the call spent away, minus their time answering


def clock_sample(t0: int, t1: int, t2: int, t3: int) -> ClockSample:
    return ClockSample(offset_ns=((t1 - t0) + (t2 - t3)) // 2, round_trip_ns=(t3 - t0) - (t2 - t1))


class ClockOffset:
    """The current best estimate of one peer's clock offset."""

    def __init__(self, keep: int = SAMPLES_KEPT):
        self._samples: deque[ClockSample] = deque(maxlen=keep)
        self.same_machine = False

    def add(self, sample: ClockSample) -> None:
        self._samples.append(sample)

    @property
    def known(self) -> bool:
        return self.same_machine or bool(self._samples)

    @property
    def offset_ns(self) -> int:
        if self.same_machine or not self._samples:
            return 0
        return min(self._samples, key=lambda s: s.round_trip_ns).offset_ns

    def stamp(self, timing: pb.StageTiming) -> None:
        """Puts the estimate on a timing about to be sent to this peer."""
        timing.next_clock_offset_ns = self.offset_ns
        timing.next_clock_known = self.known


def hop_ns(previous: pb.StageTiming, recv_ns: int) -> int | None:
    """The hop from `previous`'s send to a receipt at `recv_ns` on the receiver's clock;
    None when the sender had no estimate of the receiver's clock yet."""
    if not previous.next_clock_known or not previous.send_ns:
        return None
    return max(0, recv_ns - (previous.send_ns + previous.next_clock_offset_ns))


async def sync_clock(stub, estimate: ClockOffset, own_machine_id: str, *, resync_s: float = RESYNC_S) -> None:
    """Keeps `estimate` fresh until cancelled: a burst of calls first, then one every resync_s.
    A peer that cannot answer (an older worker, a broken link) is retried quietly."""
    calls = 0
    while True:
        try:
            t0 = time.time_ns()
            reply = await stub.Clock(pb.ClockRequest(), timeout=2.0)
            t3 = time.time_ns()
            if reply.machine_id and reply.machine_id == own_machine_id:
                estimate.same_machine = True
                return
            estimate.add(clock_sample(t0, reply.recv_ns, reply.send_ns, t3))
        except grpc.aio.AioRpcError as exc:
            log.debug("clock call failed: %s", exc.code().name)
        calls += 1
        await asyncio.sleep(0.01 if calls < FIRST_BURST else resync_s)
