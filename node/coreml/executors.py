"""Run the functions of a converted slice: Core ML on macOS (compiled once, CPU + Neural Engine),
or the numpy interpreter where there is no Core ML. Both hold one state object per chunk per
session and take / give channels-first fp16 hidden states."""

from __future__ import annotations

import logging
import os
import shutil
from typing import Protocol

import numpy as np

from node.coreml.builder import HIDDEN_IN, HIDDEN_OUT, POSITION, state_names
from node.coreml.package import Chunk, ConvertedSlice, load_program

log = logging.getLogger(__name__)


class Executor(Protocol):
    def new_state(self, chunk: int) -> object: ...
    def predict(self, chunk: int, function: str, hidden: np.ndarray, position: int, state: object) -> np.ndarray: ...


class InterpreterExecutor:
    """The MIL programs read back from the saved packages, executed with numpy."""

    def __init__(self, converted: ConvertedSlice):
        from node.coreml.interpreter import interpreters

        self.converted = converted
        self._functions = [interpreters(load_program(c.package)) for c in converted.chunks]

    def new_state(self, chunk: int) -> dict[str, np.ndarray]:
        c = self.converted.chunks[chunk]
        shape = state_shape_of(self.converted)
        return {name: np.zeros(shape, np.float16) for layer in range(c.start, c.end) for name in state_names(layer)}

    def predict(self, chunk: int, function: str, hidden: np.ndarray, position: int, state: dict) -> np.ndarray:
        out = self._functions[chunk][function].run(
            {HIDDEN_IN: hidden, POSITION: np.array([position], np.int32)}, state)
        return out[HIDDEN_OUT]


class CoreMLExecutor:
    """Each chunk compiled to .mlmodelc beside its package (once), both functions loaded with the
    CPU-and-Neural-Engine compute units. A state made by one function's model is passed to the
    other: the functions declare the same states, which is what a multifunction package shares."""

    def __init__(self, converted: ConvertedSlice):
        import coremltools as ct

        self.converted = converted
        self._models = []
        for chunk in converted.chunks:
            compiled = _compiled(chunk)
            self._models.append({name: ct.models.CompiledMLModel(str(compiled), ct.ComputeUnit.CPU_AND_NE,
                                                                  function_name=name)
                                 for name in ("decode", "prefill")})
        self.cpu_ops = _cpu_ops(converted)

    def new_state(self, chunk: int) -> object:
        return self._models[chunk]["decode"].make_state()

    def predict(self, chunk: int, function: str, hidden: np.ndarray, position: int, state: object) -> np.ndarray:
        out = self._models[chunk][function].predict(
            {HIDDEN_IN: hidden.astype(np.float16), POSITION: np.array([position], np.int32)}, state=state)
        return np.asarray(out[HIDDEN_OUT])


def _compiled(chunk: Chunk):
    """The chunk's .mlmodelc, compiled now if it is not there yet (compiling takes seconds to minutes)."""
    import coremltools as ct

    if not chunk.compiled.is_dir():
        # Compiled beside, then renamed: a half-written .mlmodelc is never taken for a finished one.
        tmp = chunk.package.with_name(f"{chunk.package.stem}.{os.getpid()}.tmp.mlmodelc")
        log.info("compiling %s", chunk.package.name)
        ct.utils.compile_model(str(chunk.package), str(tmp))
        try:
            tmp.rename(chunk.compiled)
        except OSError:   # another worker on this machine compiled it first
            shutil.rmtree(tmp, ignore_errors=True)
    return chunk.compiled


def _cpu_ops(converted: ConvertedSlice) -> dict[str, int]:
    """Ops Core ML's compute plan does not place on the Neural Engine, counted by type over every
    chunk and function (empty when the plan cannot be read)."""
    import coremltools as ct

    try:
        from coremltools.models.compute_device import MLNeuralEngineComputeDevice
        from coremltools.models.compute_plan import MLComputePlan
    except ImportError:
        return {}
    counts: dict[str, int] = {}
    for chunk in converted.chunks:
        try:
            plan = MLComputePlan.load_from_path(str(chunk.compiled), compute_units=ct.ComputeUnit.CPU_AND_NE)
        except Exception as exc:  # an older macOS without the compute-plan API
            log.info("no compute plan for %s: %s", chunk.compiled.name, exc)
            return {}
        for function in plan.model_structure.program.functions.values():
            for op in function.block.operations:
                if op.operator_name in ("const",) or op.operator_name.startswith("constexpr_"):
                    continue
                usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
                if usage is not None and not isinstance(usage.preferred_compute_device, MLNeuralEngineComputeDevice):
                    counts[op.operator_name] = counts.get(op.operator_name, 0) + 1
    return counts


def state_bytes(converted: ConvertedSlice) -> int:
    """fp16 KV states of one session over the whole slice."""
    per_layer = 2 * int(np.prod(state_shape_of(converted))) * 2
    return per_layer * (converted.end - converted.start)


def state_shape_of(converted: ConvertedSlice) -> tuple[int, int, int, int]:
    a = converted.arch
    return (1, a.kv_heads, converted.settings.context_length, a.head_dim)

