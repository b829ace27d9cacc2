"""Executes one function of a MIL program with numpy, states included.

coremltools cannot run a model on Linux, so this is how a converted slice is checked there (and
how the Core ML stage runs without a Neural Engine in tests). Operations run in program order;
each is evaluated with coremltools' own value inference when the op has one (its inputs are bound
to the values computed so far, then unbound), and with the numpy below when it does not. Values
are stored in the dtype the program declares (fp16), as Core ML stores them.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from coremltools.converters.mil.mil import Program, types
from coremltools.converters.mil.mil.operation import Operation

Impl = Callable[[Operation, dict], object]


class InterpreterError(RuntimeError):
    pass


def _conv(op: Operation, v: dict) -> np.ndarray:
    """1x1, stride 1, ungrouped, unpadded convolutions: the only kind the builder emits."""
    x, w = v["x"].astype(np.float32), v["weight"].astype(np.float32)
    groups = int(v.get("groups", 1) if v.get("groups") is not None else 1)
    pads = v.get("pad")
    if w.shape[2:] != (1, 1) or groups != 1 or (pads is not None and np.any(pads)):
        raise InterpreterError(f"{op.name}: only 1x1 ungrouped convolutions are interpreted, got weight {w.shape}")
    for key in ("strides", "dilations"):
        if v.get(key) is not None and np.any(np.asarray(v[key]) != 1):
            raise InterpreterError(f"{op.name}: {key} other than 1 are not interpreted")
    out = np.einsum("oc,nchw->nohw", w[:, :, 0, 0], x)
    if v.get("bias") is not None:
        out = out + v["bias"].astype(np.float32)[None, :, None, None]
    return out


def _silu(op: Operation, v: dict) -> np.ndarray:
    x = v["x"].astype(np.float32)
    return x / (1.0 + np.exp(-x))


NUMPY_IMPLS: dict[str, Impl] = {"conv": _conv, "silu": _silu}


def _bound_inputs(op: Operation) -> list:
    """Every Var an op reads (list inputs such as concat's `values` flattened)."""
    out = []
    for value in op.inputs.values():
        out.extend(value if isinstance(value, (list, tuple)) else [value])
    return out


class FunctionInterpreter:
    """One function of a program. States live in a dict the caller keeps (one per session)."""

    def __init__(self, program: Program, function: str = "main"):
        if function not in program.functions:
            raise InterpreterError(f"the program has no function {function!r} ({', '.join(program.functions)})")
        self.function = program.functions[function]
        self.state_names = [n for n, var in self.function.inputs.items() if types.is_state(var.sym_type)]
        self.input_names = [n for n in self.function.inputs if n not in self.state_names]
        self._consts: dict[str, np.ndarray] = {}
        for op in self.function.operations:
            if op.op_type == "const" or op.op_type.startswith("constexpr_"):
                value = op.outputs[0].val if op.op_type == "const" else op.materialized_val_inference()
                self._consts[op.outputs[0].name] = np.asarray(value)
        self.op_counts: dict[str, int] = {}
        for op in self.function.operations:
            self.op_counts[op.op_type] = self.op_counts.get(op.op_type, 0) + 1

    def _value(self, var, env: dict) -> object:
        if var.name in env:
            return env[var.name]
        if var.name in self._consts:
            return self._consts[var.name]
        if var.val is not None:
            return var.val
        raise InterpreterError(f"no value for {var.name} (read by the program before it was computed)")

    def _infer(self, op: Operation, env: dict):
        """coremltools' value inference of `op`, with its runtime inputs bound for the call."""
        bound = []
        try:
            for var in _bound_inputs(op):
                if types.is_state(var.sym_type):
                    continue
                if var.val is None:
                    value = np.asarray(self._value(var, env))
                elif isinstance(var.val, np.bool_):
                    # Programs read back from disk hold flags such as keep_dims as numpy bools,
                    # which numpy's own keepdims refuses: pass Python's.
                    value = bool(var.val)
                else:
                    continue
                holder = var.sym_type()
                holder.val = value
                bound.append((var, var._sym_val))
                var._sym_val = holder
            return op.value_inference()
        finally:
            for var, original in bound:
                var._sym_val = original

    def run(self, inputs: dict[str, np.ndarray], states: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs] + [n for n in self.state_names if n not in states]
        if missing:
            raise InterpreterError(f"missing inputs or states: {', '.join(missing)}")
        env: dict[str, object] = {}
        for name in self.input_names:
            var = self.function.inputs[name]
            env[name] = np.asarray(inputs[name], dtype=types.nptype_from_builtin(var.dtype))
        for op in self.function.operations:
            if op.outputs and op.outputs[0].name in self._consts:
                continue
            if op.op_type == "read_state":
                result = states[op.input.name].copy()
            elif op.op_type == "coreml_update_state":
                value = np.asarray(self._value(op.value, env))
                states[op.state.name] = value.astype(states[op.state.name].dtype, copy=True)
                result = value
            elif op.op_type in NUMPY_IMPLS:
                values = {k: (None if var is None else self._value(var, env))
                          for k, var in op.inputs.items() if not isinstance(var, (list, tuple))}
                result = NUMPY_IMPLS[op.op_type](op, values)
            elif type(op).value_inference is not Operation.value_inference:
                result = self._infer(op, env)
            else:
                raise InterpreterError(f"op {op.op_type} ({op.name}) has neither value inference nor a numpy implementation")
            results = result if isinstance(result, (tuple, list)) and len(op.outputs) > 1 else (result,)
            for out, value in zip(op.outputs, results):
                dtype = types.nptype_from_builtin(out.dtype) if types.is_tensor(out.sym_type) or types.is_scalar(out.sym_type) else None
                env[out.name] = np.asarray(value, dtype=dtype)
        return {var.name: env[var.name] for var in self.function.outputs}


def interpreters(program: Program) -> dict[str, FunctionInterpreter]:
    return {name: FunctionInterpreter(program, name) for name in program.functions}
