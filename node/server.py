"""The worker's gRPC service: control RPCs and the data plane for one layer slice."""

from __future__ import annotations

import asyncio
import collections
import statistics
import os
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

import node
from node import sysinfo
from node.advertise import listening_interfaces
from node.clock_sync import hop_ns
from node.cluster_auth import ClusterAuth
from node.interfaces import local_interfaces
from node.model_config import read_model_info
from node.next_stage import NextStageLink
from node.results_hub import ResultsHub
from node.sessions import SessionStore
from node.backends import load_backend_stage
from node.blas import blas_in_use
from node.stage_model import LayerRange
from node.grammar import TokenizerLoader
from node.stage_runner import PrefixRefused, StageRunner, StepError, StepRefused
from node.step_validation import (StepLimits, reportable, shard_problem, slice_fits_model, step_limits,
                                  validate_end_session, validate_results_request, validate_slice_spec, validate_step)
from node.step_queue import StepQueue
from node.worker_metrics import WorkerMetrics, step_phase, step_tokens
from proto import MAX_STEP_TOKENS, PROTOCOL_VERSION
from proto import boltpipe_pb2 as pb
from proto import boltpipe_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

DEFAULT_MAX_SESSIONS = 64
IDLE_SWEEP_S = 30.0
INLINE_STEP_TOKENS = 8
MAX_GROUP_STEPS = 256   # steps in one StepGroup (a coordinator sends at most its max_batch)


def _chosen(out) -> int:
    """Tokens a computed step chose: none, one, or a speculative step's kept drafts and the next."""
    return 0 if out.token is None else 1 + len(out.more or ())


class LoadedSlice:
    def __init__(self, spec: pb.SliceSpec, runner: StageRunner, link: NextStageLink | None, limits: StepLimits):
        self.spec = spec
        self.runner = runner
        self.link = link
        self.limits = limits  # what a Step must fit (node/step_validation.py)


class WorkerService(pb_grpc.WorkerServicer):
    def __init__(self, node_id: str, *, idle_timeout_s: float = 300.0, listen_host: str = "0.0.0.0",
                 auth: ClusterAuth | None = None):
        self.node_id = node_id
        self.auth = auth or ClusterAuth()  # how this worker calls the next stage
        self.listen_host = listen_host
        self.idle_timeout_s = idle_timeout_s
        self.started = time.monotonic()
        self._recent_ms: collections.deque[float] = collections.deque(maxlen=64)  # decode-sized passes
        self._recent_rows: collections.deque[int] = collections.deque(maxlen=64)  # their sessions
        self._groups = 0  # StepGroups received: tags the steps that may be batched together
        self._blas = blas_in_use()
        self._steps_done = 0
        self._machine = sysinfo.machine_model()
        self._machine_id = sysinfo.machine_id()
        # Large steps (prefill chunks) and loading run on this one thread, so the loop stays
        # responsive; small steps run on the loop itself. The compute loop awaits each
        # job, so two steps never run at once.
        self.compute = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compute")
        self.hub = ResultsHub()
        self.slice: LoadedSlice | None = None
        self.loading = False
        self._inbox: StepQueue[tuple[pb.Step, int]] = StepQueue()
        self._computing = False  # the compute loop is inside a step (maybe on the compute thread)
        self._tasks: list[asyncio.Task] = []
        self.metrics = WorkerMetrics(node_id)
        self.metrics_port = 0  # set by worker_main when the endpoint listens

    def start_background(self) -> None:
        self._tasks.append(asyncio.create_task(self._compute_loop()))
        self._tasks.append(asyncio.create_task(self._sweep_idle()))

    async def stop_background(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.slice and self.slice.link:
            await self.slice.link.close()
        self.compute.shutdown(wait=False, cancel_futures=True)

    # ---- control plane -------------------------------------------------

    def info(self) -> pb.NodeInfo:
        sessions = self.slice.runner.sessions if self.slice else None
        return pb.NodeInfo(
            node_id=self.node_id,
            boltpipe_version=node.__version__,
            protocol_version=PROTOCOL_VERSION,
            hostname=socket.gethostname(),
            platform=sysinfo.platform_name(),
            backends=sysinfo.mlx_backends(),
            total_memory_bytes=sysinfo.total_memory_bytes(),
            peak_rss_bytes=sysinfo.peak_rss_bytes(),
            rss_bytes=sysinfo.rss_bytes(),
            loaded=self.slice is not None,
            slice=self.slice.spec if self.slice else None,
            active_sessions=len(sessions) if sessions is not None else 0,
            kv_cache_bytes=sessions.kv_bytes() if sessions is not None else 0,
            pid=os.getpid(),
            usable_memory_bytes=sysinfo.usable_memory_bytes(),
            machine=self._machine,
            machine_id=self._machine_id,
            recent_step_ms=statistics.median(self._recent_ms) if self._recent_ms else 0.0,
            steps_done=self._steps_done,
            metrics_port=self.metrics_port,
            blas=self._blas,
            recent_batch_size=statistics.mean(self._recent_rows) if self._recent_rows else 0.0,
            rollback_horizon=self.slice.runner.rollback_horizon if self.slice else 0,
            rollback_problem=self.slice.runner.rollback_problem if self.slice else "",
            prefixes=len(sessions.prefixes) if sessions is not None else 0,
            prefix_bytes=sessions.prefix_bytes() if sessions is not None else 0,
            constraint_problem=self.slice.runner.constraint_problem() if self.slice else "no slice is loaded",
            interfaces=[pb.NetInterface(name=i.name, address=i.address, prefix_len=i.prefix_len, kind=i.kind)
                        for i in listening_interfaces(self.listen_host, local_interfaces())],
        )

    async def GetInfo(self, request, context):
        return self.info()

    async def Clock(self, request, context):
        return pb.ClockReply(recv_ns=time.time_ns(), machine_id=self._machine_id, send_ns=time.time_ns())

    async def Health(self, request, context):
        status = "loading" if self.loading else ("serving" if self.slice else "empty")
        return pb.HealthReply(
            status=status,
            active_sessions=len(self.slice.runner.sessions) if self.slice else 0,
            uptime_ms=int((time.monotonic() - self.started) * 1000),
        )

    async def EndSession(self, request, context):
        if problem := validate_end_session(request):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        if self.slice is None:
            return pb.EndSessionReply(ended=0)
        # Dropping cache references is cheap: done on the loop, like small steps. Steps still
        # waiting for the session are dropped too, so a cancelled request costs no more compute.
        keep = {k.session_id: (k.prefix_id, k.tokens) for k in request.keep}
        for session_id in [*request.session_ids, *keep]:
            self._inbox.drop(session_id)
        sessions = self.slice.runner.sessions
        sessions.drop_prefixes(request.drop_prefixes)
        ended = sessions.end(list(request.session_ids), keep=keep)
        if keep and not self._computing:
            sessions.settle()  # nothing computes now: keep them at once (else before the next step)
        return pb.EndSessionReply(ended=ended)

    async def LoadSlice(self, spec: pb.SliceSpec, context):
        if self.loading:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "a slice is already being loaded")
        if problem := validate_slice_spec(spec):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        if self.slice is not None and self.slice.spec == spec:
            yield pb.LoadProgress(phase="ready", message="already loaded", info=self.info())
            return
        # Checked before the slice being served is let go: a spec that cannot load leaves it serving.
        try:
            model = read_model_info(spec.model_path)
        except (ValueError, OSError) as exc:  # ModelDirError is a ValueError
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"cannot load slice: {exc}")
        if problem := slice_fits_model(spec, model):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        if problem := shard_problem(spec, model):
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"cannot load slice: {problem}")
        self.loading = True
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[pb.LoadProgress] = asyncio.Queue()
        last_sent = [0.0]

        def progress(phase: str, done: int, total: int) -> None:
            now = time.monotonic()
            if done < total and now - last_sent[0] < 0.1:
                return
            last_sent[0] = now
            loop.call_soon_threadsafe(events.put_nowait, pb.LoadProgress(phase=phase, done=done, total=total))

        try:
            if self.slice is not None:
                old, self.slice = self.slice, None
                if old.link:
                    await old.link.close()
            job = loop.run_in_executor(self.compute, self._load, spec, progress)
            while not job.done() or not events.empty():
                try:
                    yield await asyncio.wait_for(events.get(), timeout=0.2)
                except asyncio.TimeoutError:
                    pass
            try:
                runner = job.result()
            except Exception as exc:  # the message is for the person running `cluster up`
                log.exception("loading %s failed", spec.model_path)
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"cannot load slice: {exc}")
            link = (NextStageLink(spec.next_address, self._report_lost, machine_id=self._machine_id, auth=self.auth,
                                  on_refused=lambda _: self.metrics.error("refused_by_next_stage"))
                    if spec.next_address else None)
            context_length = model.max_position_embeddings if isinstance(model.max_position_embeddings, int) else None
            limits = step_limits(is_first=runner.stage.is_first, stage_index=spec.stage_index,
                                 hidden_size=runner.hidden_size, vocab_size=runner.vocab_size,
                                 max_step_tokens=runner.max_step_tokens,
                                 context_lengths=[context_length, getattr(runner.stage, "context_length", None)])
            self.slice = LoadedSlice(spec, runner, link, limits)
            self.metrics.set_stage(spec.stage_index)
            yield pb.LoadProgress(phase="ready", info=self.info())
        finally:
            self.loading = False

    def _load(self, spec: pb.SliceSpec, progress) -> StageRunner:
        info = read_model_info(spec.model_path)
        if spec.num_layers and spec.num_layers != info.num_layers:
            raise ValueError(f"the coordinator expects {spec.num_layers} layers but {spec.model_path} has {info.num_layers}")
        is_last = spec.layer_end == info.num_layers
        if is_last != (not spec.next_address):
            raise ValueError("only the stage holding the model's last layer may have no next stage")
        # The last stage constrains tokens to grammars: its tokenizer builds while the weights load.
        grammars = TokenizerLoader(info.path, info.vocab_size) if is_last else None
        stage = load_backend_stage(info.path, LayerRange(spec.layer_start, spec.layer_end), spec.backend, progress)
        sessions = SessionStore(
            stage.make_cache,
            max_sessions=spec.max_sessions or DEFAULT_MAX_SESSIONS,
            kv_budget_bytes=spec.kv_budget_bytes,
            idle_timeout_s=self.idle_timeout_s,
        )
        return StageRunner(
            stage, sessions, hidden_size=info.hidden_size, vocab_size=info.vocab_size, max_step_tokens=MAX_STEP_TOKENS,
            grammars=grammars,
        )

    # ---- data plane ----------------------------------------------------

    async def Steps(self, request_iterator, context):
        async for group in request_iterator:
            recv_ns = time.time_ns()
            accepted = []
            group_problem = self._group_refusal(group)
            for step in group.steps:
                if problem := self._refusal(step, group_problem):
                    yield pb.StepAck(error=problem, session_id=step.session_id)
                    continue
                self.metrics.received_step(step, recv_ns, hop_ns(step.timings[-1], recv_ns) if step.timings else None)
                accepted.append(step)
            # Steps of one token from two or more sessions may be computed as one batch.
            self._groups += 1
            batchable = len(accepted) > 1
            for step in accepted:
                together = batchable and step_tokens(step) == 1
                self._inbox.put(step.session_id, (step, recv_ns), small=self._is_small(step),
                                group=self._groups if together else None)

    @staticmethod
    def _group_refusal(group: pb.StepGroup):
        """What refuses a step for the group it came in (None: nothing), judged once per group."""
        if len(group.steps) > MAX_GROUP_STEPS:
            return lambda step: f"a group carries {len(group.steps)} steps, more than {MAX_GROUP_STEPS}"
        counts = collections.Counter(step.session_id for step in group.steps)
        if max(counts.values(), default=1) > 1:
            return lambda step: (f"session {step.session_id!r} has more than one step in a group"
                                 if counts[step.session_id] > 1 else None)
        return None

    def _refusal(self, step: pb.Step, group_problem) -> str | None:
        """Why a received step is refused before the queue (None: it is queued)."""
        if self.slice is None:
            self.metrics.error("no_slice")
            self._report(step, "worker has no slice loaded", stage_lost=True)
            return "no slice loaded"
        problem = validate_step(step, self.slice.limits)
        if problem is None and group_problem is not None:
            problem = group_problem(step)
        if problem is not None:
            # Refused before the queue: no session is touched, so garbage that names a live
            # session cannot end it or shift its cache. Only its reply_to hears of it.
            self.metrics.error("invalid_step")
            if reportable(step):
                self._report(step, problem)
        return problem

    async def Results(self, request: pb.ResultsRequest, context):
        if problem := validate_results_request(request):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        queue = self.hub.subscribe(request.reply_to)
        # Tells the subscriber it is registered, before any result exists.
        await context.send_initial_metadata(())
        try:
            while True:
                yield await queue.get()
        finally:
            self.hub.unsubscribe(request.reply_to, queue)

    def _stage_index(self) -> int:
        return self.slice.spec.stage_index if self.slice else -1

    def _report(self, step: pb.Step, error: str, *, stage_lost: bool = False) -> None:
        self.hub.publish(
            step.reply_to,
            pb.StepResult(session_id=step.session_id, step_id=step.step_id, token_id=-1, error=error,
                          failed_stage=self._stage_index(), stage_lost=stage_lost),
        )

    def _report_lost(self, step: pb.Step, error: str) -> None:
        self.metrics.error("next_stage_unreachable")
        self._report(step, error, stage_lost=True)

    @staticmethod
    def _is_small(step: pb.Step) -> bool:
        return 0 < step_tokens(step) <= INLINE_STEP_TOKENS

    @staticmethod
    def _timed(work, *args):
        # Timestamps taken where the work runs: thread hand-offs count as overhead, not compute.
        start = time.time_ns()
        out = work(*args)
        return out, start, time.time_ns()

    def _fail_session(self, current: LoadedSlice, step: pb.Step, error: str) -> None:
        # The session's cache no longer matches what the coordinator believes: end it here,
        # with the steps queued behind the failed one, and say so once.
        current.runner.sessions.end([step.session_id])
        self._inbox.drop(step.session_id)
        self._report(step, error)

    async def _compute_loop(self) -> None:
        while True:
            items = await self._inbox.take()
            current = self.slice
            if current is None:
                for step, _ in items:
                    self.metrics.error("no_slice")
                    self._report(step, "worker has no slice loaded", stage_lost=True)
                continue
            self._computing = True
            try:
                current.runner.sessions.settle()  # batches that lost a member, kept prefixes: between steps
                if len(items) == 1:
                    await self._compute_one(current, *items[0])
                else:
                    await self._compute_group(current, items)
            finally:
                self._computing = False

    async def _compute_one(self, current: LoadedSlice, step: pb.Step, recv_ns: int) -> None:
        timing = pb.StageTiming(stage=current.spec.stage_index, recv_ns=recv_ns)
        try:
            if self._is_small(step):
                # A decode-sized step runs right here: two thread hand-offs would cost
                # more than the loop being busy for one short step.
                out, timing.compute_start_ns, timing.compute_end_ns = self._timed(current.runner.run, step)
            else:
                out, timing.compute_start_ns, timing.compute_end_ns = await asyncio.get_running_loop().run_in_executor(
                    self.compute, self._timed, current.runner.run, step)
        except StepRefused as exc:
            # The session was not touched (unknown, ended, another position): it goes on, and
            # only the step's reply_to hears of the refusal. A missing prefix is this stage's
            # loss (a restart): the request can be run again from its start.
            self.metrics.error("invalid_step")
            self._report(step, str(exc), stage_lost=isinstance(exc, PrefixRefused))
            return
        except StepError as exc:
            self.metrics.error("invalid_step")
            self._fail_session(current, step, str(exc))
            return
        except Exception as exc:  # never let one bad step stop the worker
            log.exception("step failed")
            self.metrics.error("internal")
            self._fail_session(current, step, f"internal error: {exc}")
            return
        self.metrics.computed(step, timing, sampled=_chosen(out))
        self._note_pass(step, timing, rows=1)
        forward = self._deliver(current, step, out, timing)
        if forward is not None:
            current.link.send(forward)

    async def _compute_group(self, current: LoadedSlice, items: list[tuple[pb.Step, int]]) -> None:
        """One-token steps of several sessions, as one batched forward pass on the compute thread: the
        loop stays free to send the batch before (to the next stage) and to take the next one in."""
        steps = [step for step, _ in items]
        try:
            outcomes, start_ns, end_ns = await asyncio.get_running_loop().run_in_executor(
                self.compute, self._timed, current.runner.run_group, steps)
        except Exception as exc:  # the forward pass itself failed: every row's cache is in doubt
            log.exception("batched step of %d sessions failed", len(steps))
            self.metrics.error("internal")
            for step in steps:
                self._fail_session(current, step, f"internal error: {exc}")
            return
        computed = [(step, recv_ns, out) for (step, recv_ns), out in zip(items, outcomes)
                    if not isinstance(out, StepRefused)]
        for step, out in zip(steps, outcomes):
            if isinstance(out, StepRefused):
                self.metrics.error("invalid_step")
                self._report(step, str(out), stage_lost=isinstance(out, PrefixRefused))
        if not computed:
            return
        forwards = []
        for step, recv_ns, out in computed:
            timing = pb.StageTiming(stage=current.spec.stage_index, recv_ns=recv_ns,
                                    compute_start_ns=start_ns, compute_end_ns=end_ns)
            self.metrics.computed(step, timing, sampled=_chosen(out))
            forward = self._deliver(current, step, out, timing)
            if forward is not None:
                forwards.append(forward)
        # A pass of several sessions is decode work if any row is (the coordinator groups decode steps).
        phase = "decode" if any(step.decode for step, _, _ in computed) else "prefill"
        self._note_pass(computed[0][0], timing, rows=len(computed), phase=phase)
        if forwards:
            current.link.send_group(forwards)

    def _note_pass(self, step: pb.Step, timing: pb.StageTiming, *, rows: int, phase: str | None = None) -> None:
        """Bookkeeping of one forward pass of `rows` sessions (each row's own metrics are done)."""
        self._steps_done += rows
        seconds = (timing.compute_end_ns - timing.compute_start_ns) / 1e9
        self.metrics.forward_pass(rows, phase or step_phase(step), seconds)
        if self._is_small(step):
            self._recent_ms.append(seconds * 1000)
            self._recent_rows.append(rows)

    def _deliver(self, current: LoadedSlice, step: pb.Step, out, timing: pb.StageTiming) -> pb.Step | None:
        """Publishes a last stage's result; on other stages returns the step to forward."""
        timings = list(step.timings) + [timing]
        if current.link is None:
            timing.send_ns = time.time_ns()
            result = pb.StepResult(session_id=step.session_id, step_id=step.step_id, token_id=-1, timings=timings,
                                   decode=step.decode)
            if out.token is not None:
                result.token_id = out.token.token_id
                result.logprob = out.token.logprob
                result.top_logprobs.extend(pb.TopLogprob(token_id=t, logprob=lp) for t, lp in out.token.top)
            for token in out.more or ():
                result.more_tokens.add(token_id=token.token_id, logprob=token.logprob,
                                       top_logprobs=[pb.TopLogprob(token_id=t, logprob=lp) for t, lp in token.top])
            self.metrics.sent_message(result)
            self.hub.publish(step.reply_to, result)
            return None
        current.link.clock.stamp(timing)
        timing.send_ns = time.time_ns()
        forward = pb.Step(
            session_id=step.session_id,
            step_id=step.step_id,
            position=step.position,
            hidden=out.hidden,
            want_token=step.want_token,
            sampling=step.sampling,
            reply_to=step.reply_to,
            timings=timings,
            decode=step.decode,
            draft_ids=step.draft_ids,
            prefix_id=step.prefix_id,
            context_ids=step.context_ids,
            constraint=step.constraint if step.HasField("constraint") else None,
        )
        self.metrics.sent_message(forward)
        return forward

    async def _sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(IDLE_SWEEP_S)
            if self.slice is not None:
                ended = self.slice.runner.sessions.end_idle()
                if ended:
                    log.info("ended %d idle sessions", len(ended))
