"""Every GGUF tensor type the importer takes, on files llama.cpp's own llama-quantize wrote
(tests/data/gguf, made by make_fixtures.py there): the imported weights, dequantized by MLX, equal
the `gguf` package's dequantization (bit-exact with ggml) within the error stated for the type, zero
where the format is repacked. Also: BF16 stays bfloat16, MXFP4 and unknown types are refused naming
the tensor, and mx.load's own reading of Q4_K is shown wrong (so the day MLX fixes it is noticed)."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import mlx.core as mx
import numpy as np
import pytest

from node.gguf import GGUFImportError, import_gguf
from tests.kquant_writer import quantize_q4_k, quantize_q6_k

FIXTURES = Path(__file__).resolve().parent / "data" / "gguf"
# max |MLX - gguf| / max |gguf| over every matrix, as the importer stores them by default
ERROR_BOUND = {"Q4_0": 0.0, "Q4_1": 0.0, "Q5_0": 0.0, "Q5_1": 0.0, "Q8_0": 0.0,
               "Q4_K": 1.5e-3, "Q5_K": 1.5e-3,     # float16 scales (exact in float32: see below)
               "Q6_K": 1e-2, "IQ4_NL": 1e-2, "IQ4_XS": 1e-2,   # quantized again to 8 bits
               "Q3_K": 0.12, "Q2_K": 0.12,        # quantized again to 4 bits (their own error is larger)
               "Q4_K_M": 1e-2}                     # Ollama's mix: Q4_K and Q6_K
MODULES = {"token_embd": "model.embed_tokens", "output": "lm_head", "attn_q": "self_attn.q_proj",
           "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
           "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, -1).swapaxes(1, 2).reshape(w.shape)


def _worst_error(source: Path, imported: Path) -> float:
    weights = mx.load(str(imported / "model.safetensors"))
    config = json.loads((imported / "config.json").read_text())
    quant = config["quantization"]
    worst = 0.0
    for t in gguf.GGUFReader(str(source)).tensors:
        role = t.name.split(".")[-2]
        if t.tensor_type == gguf.GGMLQuantizationType.F32 or role not in MODULES:
            continue
        module = MODULES[role] if t.name.count(".") == 1 else f"model.layers.0.{MODULES[role]}"
        ref = gguf.quants.dequantize(np.array(t.data), t.tensor_type)
        if role in ("attn_q", "attn_k"):   # the importer undoes llama.cpp's RoPE row order
            ref = _unpermute(ref, config["num_attention_heads"] if role == "attn_q" else config["num_key_value_heads"])
        bits = quant.get(module, {}).get("bits", quant["bits"])
        got = mx.dequantize(weights[f"{module}.weight"], weights[f"{module}.scales"].astype(mx.float32),
                            weights[f"{module}.biases"].astype(mx.float32), group_size=32, bits=bits)
        worst = max(worst, float(np.abs(np.array(got) - ref).max() / np.abs(ref).max()))
    return worst


@pytest.mark.parametrize("kind", list(ERROR_BOUND))
def test_imported_weights_equal_ggml_dequantization(kind: str, tmp_path: Path) -> None:
    source = FIXTURES / f"tiny-llama-{kind}.gguf"
    import_gguf(source, tmp_path / "m", progress=False)
    error = _worst_error(source, tmp_path / "m")
    print(f"\n{kind}: max error {error:.2e} of the largest weight")
    assert error <= ERROR_BOUND[kind]


@pytest.mark.parametrize("kind", ["Q4_K", "Q5_K"])
def test_k_quants_are_exact_with_float32_scales(kind: str, tmp_path: Path) -> None:
    source = FIXTURES / f"tiny-llama-{kind}.gguf"
    import_gguf(source, tmp_path / "m", progress=False, exact_scales=True)
    assert _worst_error(source, tmp_path / "m") == 0.0
    assert mx.load(str(tmp_path / "m" / "model.safetensors"))["model.layers.0.mlp.up_proj.scales"].dtype == mx.float32


def test_every_fixture_type_loads_in_mlx_lm(tmp_path: Path) -> None:
    from mlx_lm.utils import load_model

    for kind in ERROR_BOUND:
        import_gguf(FIXTURES / f"tiny-llama-{kind}.gguf", tmp_path / kind, progress=False)
        model = load_model(tmp_path / kind)[0]
        logits = model(mx.array([[1, 2, 3]]))
        assert logits.shape == (1, 3, 258) and bool(mx.isfinite(logits).all())


def test_mx_load_still_misreads_q4_k() -> None:
    """MLX's own GGUF reader loads Q4_K without an error but with the wrong sub-block scales; the
    importer never uses it for K-quants. If this starts failing, MLX has fixed it."""
    source = FIXTURES / "tiny-llama-Q4_K.gguf"
    t = next(t for t in gguf.GGUFReader(str(source)).tensors if t.name == "blk.0.ffn_up.weight")
    ref = gguf.quants.dequantize(np.array(t.data), t.tensor_type)
    got = np.array(mx.load(str(source))["blk.0.ffn_up.weight"].astype(mx.float32))   # MLX dequantizes it
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() / np.abs(ref).max() > 0.1


def _tiny_gguf(path: Path, tensor_type: gguf.GGMLQuantizationType, data: np.ndarray) -> Path:
    """A one-tensor GGUF of the given type (enough to reach the type check)."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("blk.0.ffn_up.weight", gguf.quants.quantize(data, tensor_type), raw_dtype=tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_bf16_stays_bfloat16(tmp_path: Path) -> None:
    from tests.gguf_models import llama_gguf

    source = llama_gguf(tmp_path / "bf16.gguf", float_type=gguf.GGMLQuantizationType.BF16)
    import_gguf(source, tmp_path / "m", progress=False)
    weights = mx.load(str(tmp_path / "m" / "model.safetensors"))
    t = next(t for t in gguf.GGUFReader(str(source)).tensors if t.name == "blk.0.ffn_up.weight")
    assert weights["model.layers.0.mlp.up_proj.weight"].dtype == mx.bfloat16
    expected = gguf.quants.dequantize(np.array(t.data), t.tensor_type)
    assert np.array_equal(np.array(weights["model.layers.0.mlp.up_proj.weight"].astype(mx.float32)), expected)


def test_an_unsupported_type_is_refused_naming_the_tensor(tmp_path: Path) -> None:
    data = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    source = _tiny_gguf(tmp_path / "tq2.gguf", gguf.GGMLQuantizationType.TQ2_0, data)
    from node.gguf.reader import read_gguf
    from node.gguf.weights import _check_type

    with pytest.raises(GGUFImportError, match=r"'blk.0.ffn_up.weight' is stored as TQ2_0, which this importer "
                                              r"cannot convert; supported tensor types: .*MXFP4"):
        _check_type(read_gguf(source).tensors["blk.0.ffn_up.weight"])


def test_mxfp4_becomes_mlx_mxfp4_exactly() -> None:
    """gpt-oss's expert format: the same E2M1 codes and E8M0 scales in MLX's mxfp4 mode, zero error."""
    from node.gguf.blocks import mxfp4_to_mlx

    data = (np.random.default_rng(1).standard_normal((48, 256)) * 0.02).astype(np.float32)
    raw = gguf.quants.quantize(data, gguf.GGMLQuantizationType.MXFP4)
    reference = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.MXFP4)
    weight, scales = mxfp4_to_mlx(raw)
    got = mx.dequantize(mx.array(weight), mx.array(scales), group_size=32, bits=4, mode="mxfp4")
    assert np.array_equal(np.array(got.astype(mx.float32)), reference)


def test_the_test_quantizers_write_what_gguf_reads_back() -> None:
    """tests/kquant_writer.py's Q4_K / Q6_K bytes decode (by `gguf`) close to the values quantized:
    the fixtures built with them are real K-quant data."""
    x = np.random.default_rng(1).standard_normal((16, 512)).astype(np.float32) * 0.05
    for quantize, kind, bound in ((quantize_q4_k, gguf.GGMLQuantizationType.Q4_K, 0.1),
                                  (quantize_q6_k, gguf.GGMLQuantizationType.Q6_K, 0.03)):
        back = gguf.quants.dequantize(quantize(x), kind)
        assert np.sqrt(((back - x) ** 2).mean()) / np.sqrt((x ** 2).mean()) < bound, kind
