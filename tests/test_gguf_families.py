"""GGUF files of several families (written as llama.cpp's converter lays them out: tests/gguf_models.py)
import into ordinary mlx-lm model directories: the same weights as the model they came from (so the
same greedy tokens, through one process and through a 2-stage chain), tensors mapped by the `gguf`
package's name tables, a Llama's q/k rows un-permuted, stacked experts kept stacked."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import mlx.core as mx
import pytest

from node.gguf import GGUFImportError, import_gguf
from tests.gguf_models import family_gguf
from tests.stage_chain import StageChain, mlx_lm_greedy

PROMPT = [5, 80, 17, 200, 33, 101, 7, 257, 64, 12, 9]


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3", "qwen3_moe"])
def test_an_f32_gguf_imports_to_the_model_it_came_from(model_type: str, tmp_path: Path) -> None:
    source = family_gguf(tmp_path / "model.gguf", model_type, model_dir=tmp_path / "original")
    import_gguf(source, tmp_path / "imported", progress=False)
    config = json.loads((tmp_path / "imported" / "config.json").read_text())
    assert config["model_type"] == model_type
    original, imported = (mx.load(str(tmp_path / d / "model.safetensors")) for d in ("original", "imported"))
    assert sorted(imported) == sorted(original)
    for name, value in original.items():
        assert mx.array_equal(imported[name], value).item(), name
    expected = mlx_lm_greedy(tmp_path / "original", PROMPT, 6)
    assert mlx_lm_greedy(tmp_path / "imported", PROMPT, 6) == expected
    assert StageChain([tmp_path / "imported"] * 2, [0, 3, 6]).greedy(PROMPT, 6) == expected


@pytest.mark.parametrize("model_type", ["qwen3", "qwen3_moe"])
def test_a_quantized_gguf_serves_through_stages(model_type: str, tmp_path: Path) -> None:
    source = family_gguf(tmp_path / "q8.gguf", model_type, float_type=gguf.GGMLQuantizationType.Q8_0)
    import_gguf(source, tmp_path / "imported", progress=False)
    config = json.loads((tmp_path / "imported" / "config.json").read_text())
    assert config["quantization"]["bits"] == 8
    expected = mlx_lm_greedy(tmp_path / "imported", PROMPT, 6)
    assert StageChain([tmp_path / "imported"] * 3, [0, 2, 4, 6]).greedy(PROMPT, 6) == expected


def test_a_tensor_of_another_shape_is_named(tmp_path: Path) -> None:
    source = family_gguf(tmp_path / "model.gguf", "qwen3")
    reader = gguf.GGUFReader(str(source))
    bad = gguf.GGUFWriter(str(tmp_path / "bad.gguf"), "qwen3")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        bad.add_key_value(field.name, field.contents(), field.types[0],
                          field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None)
    bad.add_uint32("qwen3.embedding_length", 48)   # the metadata now disagrees with the tensors
    for t in reader.tensors:
        bad.add_tensor(t.name, t.data)
    bad.write_header_to_file()
    bad.write_kv_data_to_file()
    bad.write_tensors_to_file()
    bad.close()
    with pytest.raises(GGUFImportError, match=r"has shape .* of the model built from the file's own metadata"):
        import_gguf(tmp_path / "bad.gguf", tmp_path / "out", progress=False)
