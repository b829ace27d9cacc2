"""A slice converted to Core ML packages, cached on disk.

Each chunk of the slice (several when its weights pass Core ML's per-model size limit) becomes one
multifunction .mlpackage holding `decode` (one token) and `prefill` (a fixed chunk), which share
their weights. The cache directory is named by a hash of the slice's tensors, its layer range, the
settings and the converter's version, so a changed model or setting converts again and an
unchanged one never does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from node.coreml.arch import Arch, read_arch
from node.coreml.builder import build_function
from node.coreml.settings import AneSettings
from node.coreml.weights import SliceWeights, read_slice_weights

ProgressFn = Callable[[str, int, int], None]
FUNCTIONS = {"decode": 1, "prefill": None}   # name -> tokens per call (None: the settings' chunk)
BUILDER_VERSION = 1                          # bump when the program a slice converts to changes
MANIFEST = "manifest.json"


class PackageError(RuntimeError):
    """A slice that cannot be converted; the message says why."""


@dataclass(frozen=True)
class Chunk:
    start: int
    end: int
    package: Path
    weight_bytes: int

    @property
    def compiled(self) -> Path:
        """Where the macOS runtime keeps this package compiled (stable, so it compiles once)."""
        return self.package.with_suffix(".mlmodelc")


@dataclass(frozen=True)
class ConvertedSlice:
    root: Path
    arch: Arch
    settings: AneSettings
    chunks: list[Chunk]
    convert_seconds: float      # of the conversion that made this cache entry
    dense_fallbacks: list[str]

    @property
    def start(self) -> int:
        return self.chunks[0].start

    @property
    def end(self) -> int:
        return self.chunks[-1].end

    def package_bytes(self) -> int:
        return sum(f.stat().st_size for c in self.chunks for f in c.package.rglob("*") if f.is_file())


def cache_root() -> Path:
    return Path(os.environ.get("BOLTPIPE_HOME", Path.home() / ".boltpipe")).expanduser() / "coreml"


def cache_key(weights: SliceWeights, settings: AneSettings) -> str:
    import coremltools

    text = json.dumps({"weights": weights.digest, "layers": [weights.start, weights.end],
                       "settings": settings.key(), "coremltools": coremltools.__version__,
                       "builder": BUILDER_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def split_layers(weights: SliceWeights, max_bytes: int) -> list[SliceWeights]:
    """Consecutive groups of layers, each at most max_bytes of stored weights."""
    groups: list[list] = [[]]
    size = 0
    for layer in weights.layers:
        need = layer.stored_bytes()
        if need > max_bytes:
            raise PackageError(f"layer {layer.index} alone holds {need} bytes of weights, more than one Core ML "
                               f"package may ({max_bytes}); this model is too large per layer for the Neural Engine")
        if groups[-1] and size + need > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(layer)
        size += need
    return [SliceWeights(weights.arch, g, weights.digest, weights.dense_fallbacks) for g in groups]


# The program is built fp16 and already in the form the ANE wants, so the 95 passes of the
# default pipeline find almost nothing to do, yet each re-validates the whole program (most of the
# conversion time). These are the ones that matter here: folding the builder's constants, sharing
# equal ones, int16 indices the ANE accepts, and the in-place state update pattern.
PASSES = ["common::const_elimination", "common::noop_elimination", "common::const_deduplication",
          "common::add_int16_cast", "common::canonicalize_inplace_pattern", "common::prefer_state_in_downstream",
          "common::dead_code_elimination", "common::dedup_op_and_var_names"]


def build_program(weights: SliceWeights, settings: AneSettings):
    """Both functions in one MIL program, their equal weights marked to share one blob."""
    from coremltools.converters.mil.mil import Program
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

    program = Program()
    for name, seq in FUNCTIONS.items():
        program.add_function(name, build_function(weights, settings, seq or settings.prefill_chunk).functions["main"])
    program.default_function_name = "decode"
    program.export_as_multifunction = True
    # What ct.utils.save_multifunction does after reading saved packages back, without the round
    # trip (which re-validates the program once per pass of the default pipeline: 5x the time).
    dedup = PASS_REGISTRY["common::const_deduplication"]
    if not hasattr(dedup, "_deduplicate_const_across_functions"):
        raise PackageError("this coremltools cannot share weights between functions; install the version "
                           "boltpipe pins (pyproject.toml)")
    dedup._deduplicate_const_across_functions(program)
    return program


def save_chunk(weights: SliceWeights, settings: AneSettings, dest: Path):
    """Converts one chunk and saves it as one multifunction package at dest; returns the converted
    in-memory model (its program is what was saved; it cannot predict on Linux)."""
    import coremltools as ct

    model = ct.convert(build_program(weights, settings), convert_to="mlprogram",
                       minimum_deployment_target=ct.target.iOS18, compute_precision=ct.precision.FLOAT16,
                       pass_pipeline=ct.PassPipeline(pass_names=PASSES, pipeline_name="boltpipe-ane"),
                       skip_model_load=True)
    model.save(str(dest))
    return model


def _load_manifest(root: Path, arch: Arch, settings: AneSettings) -> ConvertedSlice | None:
    try:
        data = json.loads((root / MANIFEST).read_text())
        chunks = [Chunk(c["start"], c["end"], root / c["package"], c["weight_bytes"]) for c in data["chunks"]]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None
    if not all(c.package.is_dir() for c in chunks):
        return None
    return ConvertedSlice(root, arch, settings, chunks, float(data.get("convert_seconds", 0.0)),
                          list(data.get("dense_fallbacks", [])))


def convert_slice(model_dir: Path | str, config: dict, start: int, end: int, settings: AneSettings, *,
                  cache_dir: Path | None = None, progress: ProgressFn | None = None) -> ConvertedSlice:
    """Layers [start, end) of the model as Core ML packages: from the cache when converted before,
    else converted now (progress: "convert", chunks done, chunks in all)."""
    progress = progress or (lambda *_: None)
    arch = read_arch(config)
    progress("read weights", 0, 1)
    weights = read_slice_weights(model_dir, config, arch, start, end, quantized=settings.quantized)
    root = (cache_dir or cache_root()) / cache_key(weights, settings)
    cached = _load_manifest(root, arch, settings)
    if cached is not None:
        progress("convert", 1, 1)
        return cached
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
    began = time.monotonic()
    try:
        groups = split_layers(weights, settings.max_package_bytes)
        entries = []
        progress("convert", 0, len(groups))
        for i, group in enumerate(groups):
            name = f"layers-{group.start}-{group.end}.mlpackage"
            save_chunk(group, settings, work / name)
            progress("convert", i + 1, len(groups))
            entries.append({"start": group.start, "end": group.end, "package": name,
                            "weight_bytes": sum(layer.stored_bytes() for layer in group.layers)})
        seconds = time.monotonic() - began
        (work / MANIFEST).write_text(json.dumps({"chunks": entries, "convert_seconds": seconds,
                                                 "settings": settings.key(), "layers": [start, end],
                                                 "dense_fallbacks": weights.dense_fallbacks}, indent=1))
        try:
            work.rename(root)   # atomic: a half-written conversion is never taken from the cache
        except OSError:
            if _load_manifest(root, arch, settings) is None:   # not another worker winning the race
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    converted = _load_manifest(root, arch, settings)
    if converted is None:
        raise PackageError(f"the converted slice at {root} cannot be read back")
    return converted


def load_program(package: Path):
    """The MIL program saved in a package, read back from disk (every function)."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    model = ct.models.MLModel(str(package), skip_model_load=True)
    spec = model.get_spec()
    quiet = logging.getLogger("coremltools")
    level = quiet.level
    quiet.setLevel(logging.WARNING)   # the reader logs every re-added name of a multifunction program
    try:
        return load(spec, spec.specificationVersion, model.weights_dir)
    finally:
        quiet.setLevel(level)
