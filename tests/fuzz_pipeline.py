"""A two-stage pipeline of real worker processes for tests that drive its gRPC surface directly
(tests/test_worker_fuzz.py), and greedy sessions through it as a coordinator runs them."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import grpc

from cluster.pipeline.pipeline_client import PipelineClient, StageEndpoint
from cluster.pipeline.stage_watch import WatchSettings
from deploy.local import LocalWorkerSpec, start_local_workers, stop_pids
from node.cluster_auth import ClusterAuth
from proto import boltpipe_pb2 as pb
from proto import boltpipe_pb2_grpc as pb_grpc
from proto import grpc_options
from tests.cluster_harness import free_ports
from tests.reference import tokenizer_for

NEW_TOKENS = 20


class LoopThread:
    """One event loop on its own thread: every gRPC call of the test runs there, so hypothesis'
    synchronous test body and the valid sessions share one grpc.aio stack."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 120.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class Pipeline:
    addresses: list[str]
    pids: list[int]
    logs: list[Path]
    specs: list[pb.SliceSpec]
    model_dir: Path
    io: LoopThread
    stubs: list[pb_grpc.WorkerStub] = field(default_factory=list)
    channels: list[grpc.aio.Channel] = field(default_factory=list)


async def gather(*coros) -> list:
    return list(await asyncio.gather(*coros))


async def _open_channels(p: Pipeline) -> None:
    p.channels = [grpc.aio.insecure_channel(a, options=grpc_options()) for a in p.addresses]
    p.stubs = [pb_grpc.WorkerStub(c) for c in p.channels]


async def _load(stub: pb_grpc.WorkerStub, spec: pb.SliceSpec) -> None:
    async for event in stub.LoadSlice(spec, timeout=300):
        if event.phase == "ready":
            return
    raise AssertionError("the worker stopped loading without saying it was ready")


@contextmanager
def two_stage_pipeline(model_dir: Path, log_dir: Path, *, split: int = 15) -> Iterator[Pipeline]:
    """Two workers on loopback holding layers [0, split) and [split, 30) of the model; ended by pid."""
    ports = free_ports(2)
    workers = start_local_workers([LocalWorkerSpec(f"f{i}", "127.0.0.1", port) for i, port in enumerate(ports)], log_dir,
                                  extra_env={"OPENBLAS_NUM_THREADS": "1"})
    io = LoopThread()
    try:
        addresses = [f"127.0.0.1:{port}" for port in ports]
        specs = [pb.SliceSpec(model_path=str(model_dir), layer_start=0, layer_end=split, num_layers=30, stage_index=0,
                              num_stages=2, next_address=addresses[1], max_sessions=256),
                 pb.SliceSpec(model_path=str(model_dir), layer_start=split, layer_end=30, num_layers=30, stage_index=1,
                              num_stages=2, max_sessions=256)]
        p = Pipeline(addresses, [w.pid for w in workers], [w.log_path for w in workers], specs, model_dir, io)
        io.run(_open_channels(p))
        io.run(gather(*(_load(stub, spec) for stub, spec in zip(p.stubs, specs))), timeout=600)
        yield p
    finally:
        stop_pids([w.pid for w in workers])
        io.close()


# ---- the valid session running alongside ---------------------------------------------------------


class ValidSessions:
    """Greedy sessions through the real pipeline, one after another until stopped (at least one),
    on a PipelineClient as the coordinator uses; `done` holds each one's tokens (eos cut)."""

    def __init__(self, p: Pipeline, prompt_ids: list[int]):
        self.p, self.prompt_ids = p, prompt_ids
        self.client: PipelineClient | None = None  # made on the loop its channels belong to
        self.live_id = "none-yet"
        self.run_id = uuid.uuid4().hex[:8]
        self.done: list[list[int]] = []
        self.stop = threading.Event()
        self.started = threading.Event()
        self.task: asyncio.Future | None = None

    async def _one(self, number: int) -> list[int]:
        session_id = f"valid-{self.run_id}-{number}"  # never an id a worker has seen end
        results = self.client.open_session(session_id)
        self.live_id = session_id
        eos = tokenizer_for(self.p.model_dir).eos_token_ids
        body, out = self.prompt_ids[:-1], []
        self.client.send(pb.Step(session_id=session_id, step_id=0, position=0, token_ids=body))
        position, step_id, token = len(body), 1, self.prompt_ids[-1]
        try:
            for _ in range(NEW_TOKENS):
                self.client.send(pb.Step(session_id=session_id, step_id=step_id, position=position, token_ids=[token],
                                         want_token=True, sampling=pb.SamplingParams(), decode=bool(out)))
                while True:
                    result = await asyncio.wait_for(results.get(), 120)
                    assert not result.error, f"the valid session failed: stage {result.failed_stage}: {result.error}"
                    if result.step_id == step_id:
                        break
                token, position, step_id = result.token_id, position + 1, step_id + 1
                if token in eos:
                    break
                out.append(token)
        finally:
            await self.client.end_session(session_id)
        return out

    async def _run(self) -> None:
        # The workers have no cluster secret; health checks get room, as the fuzzing keeps them busy.
        self.client = PipelineClient([StageEndpoint(f"f{i}", a) for i, a in enumerate(self.p.addresses)], ClusterAuth(),
                                     watch=WatchSettings(timeout_s=30.0, misses=5))
        await self.client.start()
        self.started.set()
        number = 0
        while not self.stop.is_set() or not self.done:
            self.done.append(await self._one(number))
            number += 1

    def start(self) -> None:
        self.task = asyncio.run_coroutine_threadsafe(self._run(), self.p.io.loop)
        deadline = time.monotonic() + 60
        while not self.started.wait(0.1):
            if self.task.done():
                self.task.result()  # raises what went wrong
            assert time.monotonic() < deadline, "the coordinator's client did not start"

    def finish(self) -> list[list[int]]:
        self.stop.set()
        assert self.task is not None
        try:
            self.task.result(300)
        finally:
            if self.client is not None:
                self.p.io.run(self.client.close())
        return self.done
