"""A pipeline stage whose layers run through Core ML: the same small interface the StageRunner
uses from StageModel (embed, run_layers, head, make_cache), so it mixes with MLX stages freely.

The embedding (first stage) and the final norm and head (last stage) stay in MLX; only the layers
are converted. The hidden states crossing the wire stay (1, S, hidden) float32 as between MLX
stages; this stage turns them channels-first fp16 for Core ML and back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
import numpy as np

from node.coreml import availability
from node.coreml.executors import CoreMLExecutor, Executor, InterpreterExecutor, state_bytes
from node.coreml.package import ConvertedSlice, convert_slice
from node.coreml.settings import AneSettings
from node.model_config import ModelDirError, read_model_info
from node.stage_model import LayerRange, ProgressFn, StageModel, load_stage
from node.stage_runner import StepError

log = logging.getLogger(__name__)


class AneStageError(StepError):
    """A step the Core ML stage cannot run (the message goes back to the coordinator)."""


@dataclass
class AneSessionCache:
    """One session's KV states: one Core ML state object per chunk of the slice."""
    states: list
    nbytes: int                      # fixed: the states hold the full context from the start
    offset: int = 0                  # positions already written
    state: list = field(default_factory=list)   # nothing for mx.eval: the work is done when run returns


class AneStage:
    def __init__(self, ends: StageModel, converted: ConvertedSlice, executor: Executor):
        self.ends = ends
        self.converted = converted
        self.executor = executor
        self.layer_range = ends.layer_range
        self.is_first, self.is_last = ends.is_first, ends.is_last
        self.context_length = converted.settings.context_length
        self.prefill_chunk = converted.settings.prefill_chunk
        self._state_bytes = state_bytes(converted)

    def make_cache(self) -> list[AneSessionCache]:
        states = [self.executor.new_state(i) for i in range(len(self.converted.chunks))]
        return [AneSessionCache(states, self._state_bytes)]

    def embed(self, token_ids: mx.array, position: int = 0) -> mx.array:
        return self.ends.embed(token_ids, position)

    def head(self, h: mx.array) -> mx.array:
        return self.ends.head(h)

    def _through_chunks(self, x: np.ndarray, function: str, position: int, states: list) -> np.ndarray:
        for i in range(len(self.converted.chunks)):
            x = self.executor.predict(i, function, x, position, states[i])
        return x

    def run_layers(self, h: mx.array, cache: list[AneSessionCache], position: int | None = None) -> mx.array:
        """Prefill-sized pieces through the prefill function (the last one zero-padded), single
        tokens and the tail near the end of the context through decode."""
        session = cache[0]
        n = h.shape[1]
        if session.offset + n > self.context_length:
            raise AneStageError(f"the Core ML stage holds {self.context_length} positions (fixed at conversion); "
                                f"{session.offset} are used and the step brings {n} more")
        x = np.array(h.astype(mx.float32))[0].T.astype(np.float16)[None, :, None, :]   # (1, C, 1, n)
        out = np.empty_like(x)
        done, chunk = 0, self.prefill_chunk
        while done < n:
            position = session.offset + done
            left = n - done
            if left > 1 and position + chunk <= self.context_length:
                take = min(left, chunk)
                piece = np.zeros(x.shape[:3] + (chunk,), np.float16)
                piece[..., :take] = x[..., done:done + take]
                out[..., done:done + take] = self._through_chunks(piece, "prefill", position, session.states)[..., :take]
            else:
                take = 1
                out[..., done:done + 1] = self._through_chunks(x[..., done:done + 1], "decode", position, session.states)
            done += take
        session.offset += n
        return mx.array(out[0, :, 0, :].T.astype(np.float32))[None]


def load_ane_stage(model_path: str | Path, layers: LayerRange, settings: AneSettings,
                   progress: ProgressFn | None = None, *, cache_dir: Path | None = None) -> AneStage:
    """Converts (or takes from the cache) the layers, loads them for the Neural Engine (or the
    interpreter, see availability), and loads the embedding / head in MLX where the stage has them."""
    if not (availability.use_interpreter() or availability.neural_engine_present()):
        raise ModelDirError(f"this worker cannot run a Core ML slice: {availability.unavailable_reason()}; "
                            "give the node backend: gpu, cpu or auto")
    info = read_model_info(model_path)
    converted = convert_slice(info.path, info.config, layers.start, layers.end, settings, cache_dir=cache_dir,
                              progress=progress)
    if converted.dense_fallbacks:
        log.info("kept dense fp16 in Core ML: %s", "; ".join(converted.dense_fallbacks))
    if availability.use_interpreter():
        executor: Executor = InterpreterExecutor(converted)
        availability.set_loaded_notes(None)   # no compute plan: the interpreter runs everything on the CPU
    else:
        if progress:
            progress("compile", 0, 1)
        executor = CoreMLExecutor(converted)
        availability.set_loaded_notes(executor.cpu_ops)
        if executor.cpu_ops:
            log.info("Core ML runs these ops off the Neural Engine: %s", executor.cpu_ops)
    ends = load_stage(info.path, layers, progress, keep_layers=False)
    return AneStage(ends, converted, executor)
