"""The stage a SliceSpec asks for: MLX (the default) or Core ML ("coreml-ane:..."), both with the
interface the StageRunner drives (embed, run_layers, head, make_cache)."""

from __future__ import annotations

from pathlib import Path

from node.coreml.settings import is_coreml_backend, parse_backend
from node.stage_model import LayerRange, ProgressFn, load_stage


def load_backend_stage(model_path: str | Path, layers: LayerRange, backend: str, progress: ProgressFn | None = None):
    if is_coreml_backend(backend):
        from node.coreml.stage import load_ane_stage  # imports coremltools: only for Core ML slices

        return load_ane_stage(model_path, layers, parse_backend(backend), progress)
    from node.coreml import availability

    availability.set_loaded_notes(None)
    return load_stage(model_path, layers, progress)
