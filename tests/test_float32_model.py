"""`cluster bench --float32`'s model (cluster/bench/float32_model.py): a quantized model directory
becomes a float32 mlx-lm directory that computes what the quantized one computes, with its
tokenizer files, made once per source and found again."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten
from mlx_lm.utils import load_model

from cluster.bench import float32_model
from cluster.bench.float32_model import MARKER, float32_config, float32_copy, model_dtype
from tests.tiny_models import write_quantized, write_tiny_model


def _quantized_tiny(directory: Path) -> Path:
    """A tiny llama, 4-bit like the demo model, with stand-in tokenizer files beside it."""
    write_quantized(write_tiny_model(directory.parent / "plain", "llama"), directory)
    (directory / "tokenizer.json").write_text('{"stand-in": true}')
    (directory / "tokenizer_config.json").write_text("{}")
    (directory / "boltpipe_import.json").write_text("{}")  # describes the source, not the copy
    return directory


def test_float32_config_drops_quantization() -> None:
    config = {"model_type": "llama", "quantization": {"bits": 4}, "quantization_config": {"bits": 4},
              "torch_dtype": "bfloat16", "text_config": {"quantization": {"bits": 4}, "torch_dtype": "bfloat16"}}
    assert float32_config(config) == {"model_type": "llama", "torch_dtype": "float32",
                                      "text_config": {"torch_dtype": "float32"}}


def test_a_quantized_model_becomes_float32_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("BOLTPIPE_HOME", str(tmp_path / "home"))
    source = _quantized_tiny(tmp_path / "q4")
    assert model_dtype(source) == "4-bit quantized"

    copy = float32_copy(source)
    assert copy.parent == tmp_path / "home" / "models" and copy.name.startswith("float32-q4-")
    assert "dequantizing" in capsys.readouterr().err  # progress goes to stderr
    assert model_dtype(copy) == "float32"
    config = json.loads((copy / "config.json").read_text())
    assert "quantization" not in config and "quantization_config" not in config
    assert (copy / "tokenizer.json").read_text() == '{"stand-in": true}' and (copy / "tokenizer_config.json").exists()
    assert not (copy / "boltpipe_import.json").exists()
    assert json.loads((copy / MARKER).read_text())["source"] == str(source.resolve())

    f32, _ = load_model(copy)
    assert {v.dtype for _, v in tree_flatten(f32.parameters())} == {mx.float32}
    q4, _ = load_model(source)
    tokens = mx.array([[1, 5, 9, 3, 7]])
    # The same weights (dequantized exactly): the same logits up to float rounding.
    assert mx.allclose(f32(tokens), q4(tokens).astype(mx.float32), atol=1e-3, rtol=1e-3).item()

    # A second call finds it without writing anything.
    monkeypatch.setattr(float32_model, "_write", lambda *a: pytest.fail("the copy was made again"))
    assert float32_copy(source) == copy
    assert "made before" in capsys.readouterr().err


def test_a_changed_source_gets_a_copy_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOLTPIPE_HOME", str(tmp_path / "home"))
    source = _quantized_tiny(tmp_path / "q4")
    before = float32_model.float32_dir(source)
    (source / "tokenizer_config.json").write_text('{"changed": 1}')
    assert float32_model.float32_dir(source) != before
