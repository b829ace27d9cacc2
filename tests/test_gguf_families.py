"""GGUF files of several families (written as llama.cpp's converter lays them out: tests/gguf_models.py)
import into ordinary mlx-lm model directories: the same weights as the model they came from (so the
same greedy tokens, through one process and through a 2-stage chain), tensors mapped by the `gguf`
package's name tables, a Llama's q/k rows un-permuted, stacked experts kept stacked."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.utils import load_model

from node.gguf import GGUFImportError, import_gguf
from tests.gguf_models import family_gguf
from tests.stage_chain import StageChain, mlx_lm_greedy

PROMPT = [5, 80, 17, 200, 33, 101, 7, 257, 64, 12, 9]


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3", "qwen3_moe", "gemma2", "gemma3_text", "phi3",
                                        "gpt_oss"])
def test_an_f32_gguf_imports_to_the_model_it_came_from(model_type: str, tmp_path: Path) -> None:
    source = family_gguf(tmp_path / "model.gguf", model_type, model_dir=tmp_path / "original")
    import_gguf(source, tmp_path / "imported", progress=False)
    config = json.loads((tmp_path / "imported" / "config.json").read_text())
    assert config["model_type"] == model_type
    original, imported = (mx.load(str(tmp_path / d / "model.safetensors")) for d in ("original", "imported"))
    assert sorted(imported) == sorted(original)
    for name, value in original.items():
        if model_type.startswith("gemma") and name.endswith("norm.weight"):
            # stored as 1 + w in float32 and taken back: w's lowest bits may go (as for any Gemma GGUF)
            assert mx.allclose(imported[name], value, rtol=0, atol=2e-7).item(), name
            assert not mx.allclose(imported[name], value + 1, rtol=0, atol=0.5).item(), name
        else:
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


def test_gpt_oss_with_mxfp4_experts_serves_through_stages(tmp_path: Path) -> None:
    """As gpt-oss GGUFs hold it: experts in MXFP4, the rest float. The experts become MLX mxfp4 with
    zero error against gguf's dequantization; the model runs through three stages as mlx-lm runs it."""
    source = family_gguf(tmp_path / "mxfp4.gguf", "gpt_oss", float_type=gguf.GGMLQuantizationType.MXFP4)
    import_gguf(source, tmp_path / "imported", progress=False)
    config = json.loads((tmp_path / "imported" / "config.json").read_text())
    assert config["quantization"] == {"group_size": 32, "bits": 4, "mode": "mxfp4"}
    weights = mx.load(str(tmp_path / "imported" / "model.safetensors"))
    reader = {t.name: t for t in gguf.GGUFReader(str(source)).tensors}
    for layer in range(6):
        for proj, role in (("gate_proj", "ffn_gate_exps"), ("up_proj", "ffn_up_exps"), ("down_proj", "ffn_down_exps")):
            t = reader[f"blk.{layer}.{role}.weight"]
            assert t.tensor_type == gguf.GGMLQuantizationType.MXFP4
            name = f"model.layers.{layer}.mlp.experts.{proj}"
            got = mx.dequantize(weights[f"{name}.weight"], weights[f"{name}.scales"], group_size=32, bits=4,
                                mode="mxfp4")
            assert np.array_equal(np.array(got.astype(mx.float32)),
                                  gguf.quants.dequantize(np.array(t.data), t.tensor_type)), name
    assert config["layer_types"][:2] == ["sliding_attention", "full_attention"]
    expected = mlx_lm_greedy(tmp_path / "imported", PROMPT, 6)
    assert StageChain([tmp_path / "imported"] * 3, [0, 1, 4, 6]).greedy(PROMPT, 6) == expected


def test_yarn_rope_scaling_comes_back(tmp_path: Path) -> None:
    """gpt-oss's long context: YaRN, with the betas llama.cpp takes when the file does not say."""
    scaling = {"rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 16, "beta_fast": 32.0,
               "beta_slow": 1.0}
    source = family_gguf(tmp_path / "m.gguf", "gpt_oss", model_dir=tmp_path / "original", rope_scaling=scaling)
    import_gguf(source, tmp_path / "imported", progress=False)
    assert json.loads((tmp_path / "imported" / "config.json").read_text())["rope_scaling"] == scaling
    prompt = PROMPT * 4
    assert mlx_lm_greedy(tmp_path / "imported", prompt, 6) == mlx_lm_greedy(tmp_path / "original", prompt, 6)


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


def test_a_gemma3_file_as_ollama_ships_it_serves_as_text(tmp_path: Path) -> None:
    """A SentencePiece vocabulary without a space prefix (Gemma's) and a vision tower in the same file:
    the tower is left out, the tokenizer gives SentencePiece's ids, the tokens equal the original."""
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    from tests.spm_vocab import trained

    vision = {"v.patch_embd.weight": np.ones((16, 8)), "v.blk.0.attn_q.weight": np.ones((16, 16)),
              "v.blk.0.attn_q.bias": np.ones(16), "mm.input_projection.weight": np.ones((64, 16))}
    source = family_gguf(tmp_path / "gemma3.gguf", "gemma3_text", model_dir=tmp_path / "original", spm_prefix=False,
                         extra_tensors=vision)
    import_gguf(source, tmp_path / "imported", progress=False)
    config = json.loads((tmp_path / "imported" / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["attention_bias"] is False
    assert not any(n.startswith(("v.", "mm.", "vision")) for n in mx.load(str(tmp_path / "imported" / "model.safetensors")))
    sp = trained(False)
    text = "cluster up inventory.yaml, then  ask"
    assert load_tokenizer(tmp_path / "imported").encode(text) == [sp.bos_id(), *sp.encode(text)]
    prompt = [sp.bos_id(), *sp.encode(text)]
    expected = mlx_lm_greedy(tmp_path / "original", prompt, 6)
    assert mlx_lm_greedy(tmp_path / "imported", prompt, 6) == expected
    assert StageChain([tmp_path / "imported"] * 3, [0, 2, 5, 6]).greedy(prompt, 6) == expected


def _hf_llama3_factors(head_dim: int, base: float, scaling: dict) -> np.ndarray:
    """Hugging Face's llama3 RoPE as per-pair divisors of the frequency (what rope_freqs.weight holds)."""
    inv_freq = base ** -(np.arange(0, head_dim, 2) / head_dim)
    old = scaling["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / scaling["low_freq_factor"], old / scaling["high_freq_factor"]
    out = []
    for f in inv_freq:
        wavelen = 2 * np.pi / f
        if wavelen < high_wavelen:
            scaled = f
        elif wavelen > low_wavelen:
            scaled = f / scaling["factor"]
        else:
            s = (old / wavelen - scaling["low_freq_factor"]) / (scaling["high_freq_factor"] - scaling["low_freq_factor"])
            scaled = (1 - s) * f / scaling["factor"] + s * f
        out.append(f / scaled)
    return np.array(out, dtype=np.float32)


def test_llama_3_1_rope_scaling_comes_back_from_rope_freqs(tmp_path: Path) -> None:
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}
    freqs = _hf_llama3_factors(16, 10000.0, scaling)
    assert 1.0 < freqs.max() and freqs.min() == 1.0 and len(set(freqs.round(4))) > 2  # all three regimes
    source = family_gguf(tmp_path / "m.gguf", "llama", model_dir=tmp_path / "original", rope_scaling=scaling,
                         extra_tensors={"rope_freqs.weight": freqs})
    import_gguf(source, tmp_path / "imported", progress=False)
    config = json.loads((tmp_path / "imported" / "config.json").read_text())
    assert config["rope_scaling"] == scaling
    long_prompt = PROMPT * 8  # positions past the original context, where the scaling matters
    expected = mlx_lm_greedy(tmp_path / "original", long_prompt, 6)
    assert mlx_lm_greedy(tmp_path / "imported", long_prompt, 6) == expected

    def logits(directory: Path) -> mx.array:
        return load_model(directory)[0](mx.array([long_prompt]))

    assert mx.array_equal(logits(tmp_path / "imported"), logits(tmp_path / "original")).item()
    # ...and the scaling shows in them: without it they differ.
    config.pop("rope_scaling")
    (tmp_path / "imported" / "config.json").write_text(json.dumps(config))
    assert not mx.allclose(logits(tmp_path / "imported"), logits(tmp_path / "original"), atol=1e-4).item()


@pytest.mark.parametrize("tensor, what", [("rope_freqs.weight", "not Llama 3.1-style RoPE scaling"),
                                          ("rope_factors_long.weight", "Phi-3 128k LongRoPE")])
def test_rope_factors_it_cannot_express_are_refused_by_name(tensor: str, what: str, tmp_path: Path) -> None:
    model_type = "llama" if tensor.startswith("rope_freqs") else "phi3"
    odd = np.array([1.0, 3.0, 1.5, 7.0, 2.0, 1.0, 5.0, 4.0])
    source = family_gguf(tmp_path / "m.gguf", model_type, extra_tensors={tensor: odd})
    with pytest.raises(GGUFImportError, match=what):
        import_gguf(source, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
