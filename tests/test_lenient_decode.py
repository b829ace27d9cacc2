"""Bytes that are not a valid protobuf get INVALID_ARGUMENT with a message (not gRPC's UNKNOWN and a
logged traceback), on every kind of method; valid calls are untouched. A real worker service (no
slice loaded) behind a real grpc.aio server on loopback."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

from node.lenient_decode import LenientDecoding
from node.server import WorkerService
from proto import boltpipe_pb2 as pb
from proto import boltpipe_pb2_grpc as pb_grpc
from proto import grpc_options

GARBAGE = b"\x00\x00\x00"  # field number 0: never a valid protobuf


async def _with_worker(body) -> None:
    server = grpc.aio.server(options=grpc_options(), interceptors=[LenientDecoding()])
    pb_grpc.add_WorkerServicer_to_server(WorkerService("lenient", listen_host="127.0.0.1"), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=grpc_options()) as channel:
            await body(channel)
    finally:
        await server.stop(None)


def _run(body) -> None:
    asyncio.run(_with_worker(body))


async def _code(awaitable) -> tuple[grpc.StatusCode, str]:
    try:
        await awaitable
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize("method", ["GetInfo", "Health", "Clock", "EndSession"])
def test_unary_methods(method: str, caplog: pytest.LogCaptureFixture) -> None:
    async def body(channel) -> None:
        code, details = await _code(channel.unary_unary(f"/boltpipe.v1.Worker/{method}")(GARBAGE, timeout=10))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details.startswith("the request is not a valid protobuf message: Error parsing message")
        # The worker still answers valid requests.
        health = await pb_grpc.WorkerStub(channel).Health(pb.HealthRequest(), timeout=10)
        assert health.status == "empty"

    with caplog.at_level(logging.ERROR):
        _run(body)
    assert "Traceback" not in caplog.text and "Unexpected" not in caplog.text


@pytest.mark.parametrize("method", ["LoadSlice", "Results"])
def test_server_streaming_methods(method: str) -> None:
    async def body(channel) -> None:
        call = channel.unary_stream(f"/boltpipe.v1.Worker/{method}")(GARBAGE, timeout=10)
        code, details = await _code(call.read())
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a valid protobuf" in details

    _run(body)


def test_a_stream_is_refused_at_the_message_that_does_not_parse() -> None:
    async def body(channel) -> None:
        good = pb.StepGroup(steps=[pb.Step(session_id="s", token_ids=[1])]).SerializeToString()
        call = channel.stream_stream("/boltpipe.v1.Worker/Steps")(iter([good, GARBAGE]), timeout=10)
        acks = []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for ack in call:
                acks.append(pb.StepAck.FromString(ack))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # The message before it was handled as usual (refused here: this worker has no slice).
        assert [a.error for a in acks] == ["no slice loaded"]

    _run(body)


def test_valid_streams_are_untouched() -> None:
    async def body(channel) -> None:
        stub = pb_grpc.WorkerStub(channel)
        group = pb.StepGroup(steps=[pb.Step(session_id="s", token_ids=[1])])
        acks = [a async for a in stub.Steps(iter([group] * 3), timeout=10)]
        assert [a.error for a in acks] == ["no slice loaded"] * 3
        call = stub.Results(pb.ResultsRequest(reply_to="coord-1"), timeout=10)
        await call.initial_metadata()
        call.cancel()
        assert await call.code() == grpc.StatusCode.CANCELLED

    _run(body)
