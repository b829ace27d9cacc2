"""Hop timing across two clocks: NTP's offset from round trips, the best sample kept, and the
Clock RPC of a real worker service over gRPC on loopback."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from node.clock_sync import ClockOffset, clock_sample, hop_ns, sync_clock
from node.server import WorkerService
from proto import boltpipe_pb2 as pb
from proto import boltpipe_pb2_grpc as pb_grpc

MS = 1_000_000


def test_offset_and_round_trip_from_four_readings() -> None:
    # Their clock runs 50 ms ahead; 1 ms each way; 0.2 ms to answer.
    t0 = 1_000 * MS
    t1 = t0 + 1 * MS + 50 * MS
    t2 = t1 + MS // 5
    t3 = t0 + 2 * MS + MS // 5
    sample = clock_sample(t0, t1, t2, t3)
    assert sample.offset_ns == 50 * MS
    assert sample.round_trip_ns == 2 * MS


def test_the_shortest_round_trip_wins() -> None:
    estimate = ClockOffset()
    assert not estimate.known
    estimate.add(clock_sample(0, 9 * MS, 9 * MS, 10 * MS))       # slow reply path: offset looks like 4 ms
    estimate.add(clock_sample(0, MS // 10, MS // 10, MS // 5))   # a quick, symmetric one: offset 0
    assert estimate.known and estimate.offset_ns == 0


def test_hop_reads_the_senders_clock_through_the_offset() -> None:
    sent = pb.StageTiming(send_ns=100 * MS)
    ClockOffset().stamp(sent)
    assert hop_ns(sent, 101 * MS) is None  # no estimate yet: the hop is not guessed
    estimate = ClockOffset()
    estimate.add(clock_sample(0, 30 * MS, 30 * MS, 0))  # receiver's clock 30 ms ahead
    estimate.stamp(sent)
    assert sent.next_clock_known and sent.next_clock_offset_ns == 30 * MS
    assert hop_ns(sent, 100 * MS + 30 * MS + MS // 2) == MS // 2


async def _serve(service: WorkerService) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    pb_grpc.add_WorkerServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


@pytest.mark.parametrize("same_machine", [True, False])
def test_sync_with_a_real_worker(same_machine: bool) -> None:
    async def scenario() -> ClockOffset:
        service = WorkerService("w1", listen_host="127.0.0.1")
        server, port = await _serve(service)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                estimate = ClockOffset()
                own_id = service._machine_id if same_machine else "another-machine"
                task = asyncio.create_task(sync_clock(pb_grpc.WorkerStub(channel), estimate, own_id, resync_s=0.01))
                await asyncio.sleep(0.5)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return estimate
        finally:
            await server.stop(None)
            service.compute.shutdown(wait=False)

    estimate = asyncio.run(scenario())
    assert estimate.known
    if same_machine:
        assert estimate.same_machine and estimate.offset_ns == 0
    else:
        # One machine, one clock: a measured offset is only the asymmetry of a loopback round trip.
        assert not estimate.same_machine
        assert abs(estimate.offset_ns) < 2 * MS
