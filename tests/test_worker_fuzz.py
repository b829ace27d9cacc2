"""Fuzzing a real two-stage pipeline's gRPC surface: hundreds of hypothesis-generated messages
(BOLTPIPE_FUZZ_CASES sets how many: steps with random and edge-case fields on both stages, garbage
control calls, bytes that do not parse, each kind at least once) never kill a worker, every call
ends with the status it should, and valid sessions running alongside give exactly mlx-lm's tokens.
Also: a message over the size limit gets RESOURCE_EXHAUSTED from gRPC and the worker serves on."""

from __future__ import annotations

import asyncio
import collections
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings

from deploy.local import pid_alive
from node.step_validation import check_name
from proto import MAX_MESSAGE_BYTES, grpc_options
from proto import boltpipe_pb2 as pb
from proto import boltpipe_pb2_grpc as pb_grpc
from tests import fuzz_messages as fm
from tests.fuzz_pipeline import NEW_TOKENS, Pipeline, ValidSessions, gather, two_stage_pipeline
from tests.reference import reference_ids, tokenizer_for

pytestmark = pytest.mark.cluster  # starts worker processes: not in the quick loop

# Sized for CI (every kind of call is still fuzzed, checked below); BOLTPIPE_FUZZ_CASES=20000 for a long hunt.
FUZZ_CASES = int(os.environ.get("BOLTPIPE_FUZZ_CASES", "800"))
BATCH = 100
PROMPT = "Write a short poem about the sea, please."
SINK_NAME = "fuzz-sink"
OK, INVALID, PRECONDITION = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION
CLIENT_SEND_RACE = grpc.StatusCode.ABORTED  # stands for a raw stream this client could not finish sending


@pytest.fixture(scope="module")
def pipeline(smollm2_dir: Path, tmp_path_factory) -> Iterator[Pipeline]:
    with two_stage_pipeline(smollm2_dir, tmp_path_factory.mktemp("fuzz-logs")) as p:
        yield p


@pytest.fixture(scope="module")
def prompt_and_reference(smollm2_dir: Path) -> tuple[list[int], list[int]]:
    prompt_ids = tokenizer_for(smollm2_dir).encode_user_prompt(PROMPT)
    expected = reference_ids(smollm2_dir, prompt_ids, NEW_TOKENS)
    assert len(expected) >= 16 and len(prompt_ids) + NEW_TOKENS < fm.LIVE_POSITIONS
    return prompt_ids, expected


# ---- sending one fuzz case -----------------------------------------------------------------------


@dataclass
class Tally:
    by_kind: collections.Counter = field(default_factory=collections.Counter)
    statuses: collections.Counter = field(default_factory=collections.Counter)
    acks: int = 0            # steps refused on receipt
    steps_sent: int = 0
    sink_results: int = 0
    sink_errors: collections.Counter = field(default_factory=collections.Counter)
    used_ids: set[str] = field(default_factory=set)


def _error_kind(error: str, live_id: str) -> str:
    """A refusal reported to the fuzzer, by kind: the field refused on receipt, or what the compute
    loop found about the session (the live one named apart)."""
    if "step starts at position" in error:
        return "conflicts with the live session" if live_id in error else "conflicts with a fuzz session"
    for phrase in ("has ended", "unknown session", "worker is full"):
        if phrase in error:
            return phrase
    return error.split(":", 1)[0]


class Fuzzer:
    def __init__(self, p: Pipeline, sessions: ValidSessions):
        self.p, self.sessions = p, sessions
        self.tally = Tally()
        self.batch = 0
        self.raw: list[grpc.aio.Channel] = []   # untyped: bytes in, bytes out
        self.sinks: list[asyncio.Task] = []

    def _name(self, value: str) -> str:
        if value == fm.LIVE:
            return self.sessions.live_id
        if value.startswith(fm.POOL):
            return f"fz-{self.batch}-{value[len(fm.POOL):]}"
        return {fm.COORD: self.sessions.client.reply_to, fm.SINK: SINK_NAME}.get(value, value)

    async def open(self) -> None:
        """Channels for raw bytes, and a Results subscription on every stage that counts what comes."""
        self.raw = [grpc.aio.insecure_channel(a, options=grpc_options()) for a in self.p.addresses]
        async def read(stub: pb_grpc.WorkerStub) -> None:
            async for result in stub.Results(pb.ResultsRequest(reply_to=SINK_NAME)):
                self.tally.sink_results += 1
                if result.error:
                    self.tally.sink_errors[_error_kind(result.error, self.sessions.live_id)] += 1
        self.sinks = [asyncio.create_task(read(stub)) for stub in self.p.stubs]

    async def send(self, case) -> grpc.StatusCode:
        kind = type(case).__name__
        self.tally.by_kind[kind] += 1
        self.last_details = ""
        try:
            code = await getattr(self, f"_{kind}")(case)
        except grpc.aio.AioRpcError as exc:
            code, self.last_details = exc.code(), f"{exc.details()} ({exc.debug_error_string()})"
        self.tally.statuses[(kind, code.name)] += 1
        return code

    async def _StepsCase(self, case: fm.StepsCase) -> grpc.StatusCode:
        """The steps go as StepGroups of consecutive steps of distinct sessions: garbage meets the
        batched path as well as the single one."""
        steps = []
        for step in case.steps:
            step = pb.Step.FromString(step.SerializeToString())
            step.session_id, step.reply_to = self._name(step.session_id), self._name(step.reply_to)
            if check_name("", step.session_id, required=True) is None and not step.session_id.startswith("valid-"):
                self.tally.used_ids.add(step.session_id)  # ended after the batch: no session outlives the test
            steps.append(step)
        self.tally.steps_sent += len(steps)
        call = self.p.stubs[case.stage].Steps(iter(_groups(steps)), timeout=60)
        async for ack in call:
            assert ack.error, "a worker only acknowledges steps it refuses"
            self.tally.acks += 1
        return await call.code()

    async def _EndCase(self, case: fm.EndCase) -> grpc.StatusCode:
        request = pb.EndSessionRequest(session_ids=[self._name(s) for s in case.request.session_ids])
        for stub in self.p.stubs:
            await stub.EndSession(request, timeout=30)
        return OK

    async def _ResultsCase(self, case: fm.ResultsCase) -> grpc.StatusCode:
        assert case.request.reply_to not in (SINK_NAME, self.sessions.client.reply_to)
        call = self.p.stubs[0].Results(case.request, timeout=30)
        await call.initial_metadata()  # registered, or the call ended with its status
        call.cancel()
        code = await call.code()
        return OK if code == grpc.StatusCode.CANCELLED else code

    async def _LoadCase(self, case: fm.LoadCase) -> grpc.StatusCode:
        async for event in self.p.stubs[case.stage].LoadSlice(case.spec, timeout=30):
            assert case.spec == self.p.specs[case.stage] and event.message == "already loaded", \
                "a spec that should have been refused was loaded"
        return OK

    async def _InfoCase(self, case: fm.InfoCase) -> grpc.StatusCode:
        request = {"GetInfo": pb.InfoRequest, "Health": pb.HealthRequest, "Clock": pb.ClockRequest}[case.method]()
        await getattr(self.p.stubs[case.stage], case.method)(request, timeout=30)
        return OK

    async def _RawCase(self, case: fm.RawCase) -> grpc.StatusCode:
        channel = self.raw[len(case.payloads) % 2]
        path = f"/boltpipe.v1.Worker/{case.method}"
        if case.kind == "unary":
            await channel.unary_unary(path)(case.payloads[0], timeout=30)
            return OK
        if case.kind == "server_stream":
            call = channel.unary_stream(path)(case.payloads[0], timeout=30)
            await call.initial_metadata()
            call.cancel()
            code = await call.code()
            return OK if code == grpc.StatusCode.CANCELLED else code
        call = channel.stream_stream(path)(iter(case.payloads), timeout=30)
        try:
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INTERNAL and "SendMessageOperation" in (exc.debug_error_string() or ""):
                # This client's own send failed: the worker had already refused the stream (at a
                # message that did not parse) while the rest was still being sent.
                return CLIENT_SEND_RACE
            raise
        return await call.code()

    async def check_alive(self) -> None:
        """Both workers are running and answer; the fuzz sessions of this batch are ended."""
        for pid, log in zip(self.p.pids, self.p.logs):
            assert pid_alive(pid), f"worker {pid} died; its log:\n{log.read_text()[-3000:]}"
        for stub in self.p.stubs:
            health = await stub.Health(pb.HealthRequest(), timeout=60)
            assert health.status == "serving"
        ids = sorted(self.tally.used_ids | {f"fz-{self.batch}-{k}" for k in range(fm.POOL_SIZE)})
        self.tally.used_ids.clear()
        for start in range(0, len(ids), 512):
            for stub in self.p.stubs:
                await stub.EndSession(pb.EndSessionRequest(session_ids=ids[start:start + 512]), timeout=30)
        self.batch += 1

    async def close(self) -> None:
        for task in self.sinks:
            task.cancel()
        await asyncio.gather(*self.sinks, return_exceptions=True)
        for channel in self.raw:
            await channel.close()


# What each kind of call may end with. UNKNOWN would be an exception escaping a handler (or bytes
# that do not parse reaching one: node/lenient_decode.py answers those with INVALID_ARGUMENT).
ALLOWED = {
    "StepsCase": {OK},
    "EndCase": {OK, INVALID},
    "ResultsCase": {OK, INVALID},
    "LoadCase": {OK, INVALID, PRECONDITION},
    "InfoCase": {OK},
    "RawCase": {OK, INVALID, PRECONDITION, CLIENT_SEND_RACE},
}


async def _on_every_stage(p: Pipeline, call) -> list:
    """`call(stub)` for every stage, made on the pipeline's own loop (a gRPC call is bound to the
    loop it is created on; the test's thread has none)."""
    return await gather(*(call(stub) for stub in p.stubs))


def test_fuzzing_never_kills_a_worker_and_valid_sessions_complete(pipeline, prompt_and_reference) -> None:
    prompt_ids, expected = prompt_and_reference
    p = pipeline
    sessions = ValidSessions(p, prompt_ids)
    fuzzer = Fuzzer(p, sessions)
    p.io.run(fuzzer.open())
    sessions.start()
    cases = fm.cases(str(p.model_dir), p.specs)
    started = time.monotonic()
    count = [0]

    @settings(max_examples=FUZZ_CASES, derandomize=True, deadline=None, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(case=cases)
    def fuzz(case) -> None:
        code = p.io.run(fuzzer.send(case), timeout=120)
        assert code in ALLOWED[type(case).__name__], f"{type(case).__name__} ended with {code.name} {fuzzer.last_details}: {case!r:.2000}"
        count[0] += 1
        if count[0] % BATCH == 0:
            p.io.run(fuzzer.check_alive())

    try:
        fuzz()
        p.io.run(fuzzer.check_alive())
    finally:
        done = sessions.finish()
        p.io.run(fuzzer.close())
    elapsed = time.monotonic() - started
    t = fuzzer.tally
    print(f"\nfuzz cases run: {count[0]} in {elapsed:.0f} s ({dict(t.by_kind)}); steps sent {t.steps_sent}, "
          f"refused on receipt {t.acks}; results to the fuzzer {t.sink_results} "
          f"({sum(t.sink_errors.values())} errors); valid sessions completed alongside: {len(done)}")
    print("errors reported to the fuzzer:", dict(t.sink_errors.most_common()))
    print("statuses:", dict(sorted(((f"{k}:{c}", n) for (k, c), n in t.statuses.items()))))
    assert count[0] >= FUZZ_CASES * 0.9
    assert set(t.by_kind) == set(ALLOWED), f"kinds of call never fuzzed: {set(ALLOWED) - set(t.by_kind)}"
    for tokens in done:
        assert tokens == expected, "a valid session running alongside the fuzzing diverged from mlx-lm"
    # Stage 0 forwards only what stage 1 accepts: the two stages' checks agree.
    assert "refused a step" not in p.logs[0].read_text()
    infos = p.io.run(_on_every_stage(p, lambda stub: stub.GetInfo(pb.InfoRequest(), timeout=30)))
    assert all(i.loaded for i in infos) and [i.slice for i in infos] == p.specs, "the slices are the ones loaded"
    assert [i.active_sessions for i in infos] == [0, 0], "every session the fuzzing opened was ended"


async def _send_raw_step(address: str, size: int) -> grpc.StatusCode:
    # A channel that itself sends anything: the worker's limit is what is tested.
    options = [o for o in grpc_options() if o[0] != "grpc.max_send_message_length"] + [
        ("grpc.max_send_message_length", -1)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        call = channel.stream_stream("/boltpipe.v1.Worker/Steps")(iter([b"\0" * size]), timeout=120)
        try:
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return await call.code()


def test_a_message_over_the_limit_is_refused_by_grpc_and_the_worker_serves_on(pipeline, prompt_and_reference) -> None:
    p = pipeline
    for address in p.addresses:
        assert p.io.run(_send_raw_step(address, MAX_MESSAGE_BYTES + 1)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    for pid in p.pids:
        assert pid_alive(pid)
    healths = p.io.run(_on_every_stage(p, lambda stub: stub.Health(pb.HealthRequest(), timeout=30)))
    assert [h.status for h in healths] == ["serving", "serving"]
    prompt_ids, expected = prompt_and_reference
    sessions = ValidSessions(p, prompt_ids)
    sessions.start()
    assert sessions.finish() == [expected]


def test_a_step_with_a_million_token_ids_is_refused_with_its_count(pipeline) -> None:
    async def send() -> list[pb.StepAck]:
        step = pb.Step(session_id="huge", position=0, token_ids=[1] * 1_000_000, reply_to="")
        return [ack async for ack in pipeline.stubs[0].Steps(iter([pb.StepGroup(steps=[step])]), timeout=60)]

    acks = pipeline.io.run(send())
    assert [a.error for a in acks] == ["token_ids: expected 1 to 8192 ids, got 1000000"]


def _groups(steps: list[pb.Step]) -> list[pb.StepGroup]:
    """Consecutive steps in groups, a new group wherever a session would appear twice."""
    groups: list[list[pb.Step]] = [[]]
    for step in steps:
        if any(s.session_id == step.session_id for s in groups[-1]):
            groups.append([])
        groups[-1].append(step)
    return [pb.StepGroup(steps=g) for g in groups if g]


def test_a_group_naming_a_session_twice_is_refused_for_that_session_only(pipeline) -> None:
    async def send() -> list[pb.StepAck]:
        twice = [pb.Step(session_id="dup", position=0, token_ids=[1], reply_to="") for _ in range(2)]
        group = pb.StepGroup(steps=[*twice, pb.Step(session_id="fine", position=0, token_ids=[1, 2], reply_to="")])
        acks = [ack async for ack in pipeline.stubs[0].Steps(iter([group]), timeout=60)]
        await pipeline.stubs[0].EndSession(pb.EndSessionRequest(session_ids=["fine"]), timeout=30)
        return acks

    acks = pipeline.io.run(send())
    assert [(a.session_id, a.error) for a in acks] == [("dup", "session 'dup' has more than one step in a group")] * 2
