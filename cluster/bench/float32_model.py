"""`cluster bench --float32`: the served model as a float32 mlx-lm model directory, made once.

Quantized weights are dequantized (mlx-lm's own `dequantize_model`) and every floating tensor cast
to float32, so each matrix product of a step goes through the BLAS (on Linux the system OpenBLAS a
worker preloads: node/blas_preload.py), the regime where a decode step is bound by memory as on an
Apple GPU. The copy lives in the model cache (BOLTPIPE_HOME/models/float32-NAME-KEY), keyed by the
source directory's path and its files' sizes and modification times, so a second run reuses it;
the tokenizer and other small files come along, so the cluster's tokenizer works on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from cluster import paths

MARKER = "boltpipe_float32.json"
# Left behind: weights are written anew, boltpipe's own markers describe the source, not the copy.
_NOT_COPIED = ("config.json", "model.safetensors.index.json")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def source_key(model_dir: Path) -> str:
    """What the copy is keyed by: the source's resolved path and every file's size and mtime."""
    model_dir = model_dir.resolve()
    files = []
    for f in sorted(model_dir.iterdir()):
        if f.is_file():
            stat = f.stat()
            files.append([f.name, stat.st_size, stat.st_mtime_ns])
    blob = json.dumps({"source": str(model_dir), "files": files}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def float32_dir(model_dir: Path) -> Path:
    return paths.model_cache() / f"float32-{model_dir.resolve().name}-{source_key(model_dir)}"


def float32_config(config: dict) -> dict:
    """config.json of the float32 copy: no quantization, float32 as the dtype."""
    out = {k: v for k, v in config.items() if k not in ("quantization", "quantization_config")}
    out["torch_dtype"] = "float32"
    if isinstance(out.get("text_config"), dict):
        text = {k: v for k, v in out["text_config"].items() if k not in ("quantization", "quantization_config")}
        out["text_config"] = text | ({"torch_dtype": "float32"} if "torch_dtype" in text else {})
    return out


def _write(model_dir: Path, target: Path) -> None:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import dequantize_model, load_model, save_model

    started = time.monotonic()
    _say(f"float32 copy of {model_dir} (made once, kept in {target}):")
    _say("  loading the model...")
    model, _ = load_model(model_dir, lazy=True)
    _say("  dequantizing and casting to float32...")
    model = dequantize_model(model)
    model.set_dtype(mx.float32)
    size = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    _say(f"  writing {size / 2**20:.0f} MiB of weights...")
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(tmp, model)
    config = json.loads((model_dir / "config.json").read_text())
    (tmp / "config.json").write_text(json.dumps(float32_config(config), indent=2) + "\n")
    for f in sorted(model_dir.iterdir()):  # tokenizer files, chat template, generation config, ...
        if f.is_file() and f.suffix != ".safetensors" and f.name not in _NOT_COPIED and not f.name.startswith("boltpipe_"):
            shutil.copy2(f, tmp / f.name)
    (tmp / MARKER).write_text(json.dumps({"source": str(model_dir.resolve()), "key": source_key(model_dir),
                                          "bytes": size}, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)  # a half-written copy is never taken for a whole one
    _say(f"  done in {time.monotonic() - started:.1f} s")


def float32_copy(model_dir: Path) -> Path:
    """The float32 model directory of `model_dir`, made on the first call (progress on stderr)."""
    model_dir = Path(model_dir)
    target = float32_dir(model_dir)
    if (target / MARKER).is_file():
        _say(f"float32 copy of {model_dir}: {target} (made before)")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _write(model_dir, target)
    return target


def model_dtype(model_dir: Path) -> str:
    """How a model directory stores its weights, in words: `4-bit quantized`, `float32`, ..."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return "unknown"
    quantization = config.get("quantization") or config.get("quantization_config")
    if isinstance(quantization, dict) and quantization.get("bits"):
        return f"{quantization['bits']}-bit quantized"
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    return str(config.get("torch_dtype") or config.get("dtype") or text.get("torch_dtype") or "unknown")
