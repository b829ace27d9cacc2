"""GGUF import: the bundled SmolLM2 file end to end, tiny synthetic models, and every refusal."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from node.gguf import GGUFImportError, import_gguf
from tests.gguf_writer import (BF16, F16, F32, Q4_0, Q4_1, Q8_0, TQ2_0, Tensor, random_tensor, tiny_llama_metadata,
                               tiny_llama_tensors, write_gguf, write_tiny_llama)

SUPPORTED_TYPES = "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, Q3_K, Q2_K"

# An independent statement of llama.cpp's tensor names -> HF names, to check the importer against.
_LAYER = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
          "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
          "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
_GLOBAL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def hf_name(gguf_name: str) -> str:
    if m := re.match(r"blk\.(\d+)\.(\w+)\.(\w+)$", gguf_name):
        return f"model.layers.{m[1]}.{_LAYER[m[2]]}.{m[3]}"
    base, suffix = gguf_name.split(".")
    return f"{_GLOBAL[base]}.{suffix}"


def gguf_row_order(hf: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's permutation (HF rotate-half rows -> interleaved pairs), applied forward."""
    rows = hf.shape[0]
    return hf.reshape(heads, 2, rows // heads // 2, *hf.shape[1:]).swapaxes(1, 2).reshape(hf.shape)


def load_dir_weights(model_dir: Path) -> dict[str, mx.array]:
    weights: dict[str, mx.array] = {}
    for f in sorted(model_dir.glob("model*.safetensors")):
        weights.update(mx.load(str(f)))
    return weights


def raw_gguf_model_dir(gguf: Path, imported: Path, out: Path) -> Path:
    """mx.load's view of the GGUF, renamed but NOT un-permuted, run with traditional RoPE."""
    out.mkdir()
    cfg = json.loads((imported / "config.json").read_text())
    cfg["rope_traditional"] = True
    (out / "config.json").write_text(json.dumps(cfg))
    mx.save_safetensors(str(out / "model.safetensors"), {hf_name(k): v for k, v in mx.load(str(gguf)).items()})
    return out


def assert_same_logits(imported: Path, reference: Path, ids: list[int], atol: float) -> None:
    from mlx_lm.utils import load_model

    tokens = mx.array([ids])
    a, _ = load_model(imported)
    b, _ = load_model(reference)
    la, lb = a(tokens), b(tokens)
    mx.eval(la, lb)
    diff = float(mx.abs(la - lb).max())
    assert diff < atol, f"imported model's logits differ from the GGUF's by {diff}"


def no_leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".importing-" in p.name or ".old-" in p.name]


# --- the bundled SmolLM2 -------------------------------------------------------------------------------


def test_bundled_config_and_files(smollm2_dir: Path, smollm2_gguf: Path) -> None:
    names = sorted(p.name for p in smollm2_dir.iterdir())
    assert names == ["boltpipe_import.json", "config.json", "model.safetensors", "tokenizer.json",
                     "tokenizer_config.json"]
    cfg = json.loads((smollm2_dir / "config.json").read_text())
    expected = {"model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30, "intermediate_size": 1536,
                "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152,
                "max_position_embeddings": 8192, "tie_word_embeddings": True, "rope_traditional": False,
                "rope_theta": 100000.0, "bos_token_id": 1, "eos_token_id": 2}
    assert {k: cfg[k] for k in expected} == expected
    assert cfg["rms_norm_eps"] == pytest.approx(1e-5)
    # Layers are Q4_1 (4-bit), the token embedding Q8_0 (8-bit): one override, nothing else.
    assert cfg["quantization"] == {"group_size": 32, "bits": 4, "mode": "affine",
                                   "model.embed_tokens": {"group_size": 32, "bits": 8}}
    marker = json.loads((smollm2_dir / "boltpipe_import.json").read_text())
    data = smollm2_gguf.read_bytes()
    assert marker["source"] == {"name": smollm2_gguf.name, "size": len(data),
                                "sha256": hashlib.sha256(data).hexdigest()}
    assert marker["importer_version"] and marker["num_layers"] == 30


def test_bundled_weights_equal_gguf_with_qk_rows_unpermuted(smollm2_dir: Path, smollm2_gguf: Path) -> None:
    ours = load_dir_weights(smollm2_dir)
    ref = {hf_name(k): v for k, v in mx.load(str(smollm2_gguf)).items()}
    assert set(ours) == set(ref)
    assert "lm_head.weight" not in ours  # tied
    assert ours["model.embed_tokens.weight"].shape == (49152, 576 * 8 // 32)
    for name, value in ref.items():
        got = np.array(ours[name])
        assert got.dtype == np.array(value).dtype, name
        if ".q_proj." in name or ".k_proj." in name:
            heads = 9 if ".q_proj." in name else 3
            # Every row of weight, scales and biases moved, and moved exactly by the inverse permutation.
            assert np.array_equal(gguf_row_order(got, heads), np.array(value)), name
            assert not np.array_equal(got, np.array(value)), name
        else:
            assert np.array_equal(got, np.array(value)), name
    # The same check on dequantized values: the rows of a block of heads, in float.
    w = "model.layers.7.self_attn.k_proj"
    deq = mx.dequantize(ours[f"{w}.weight"], ours[f"{w}.scales"], ours[f"{w}.biases"], group_size=32, bits=4)
    deq_ref = mx.dequantize(ref[f"{w}.weight"], ref[f"{w}.scales"], ref[f"{w}.biases"], group_size=32, bits=4)
    assert deq.shape == (192, 576)
    assert np.array_equal(gguf_row_order(np.array(deq), 3), np.array(deq_ref))


def test_bundled_logits_match_gguf_run_with_interleaved_rope(smollm2_dir: Path, smollm2_gguf: Path,
                                                             tmp_path: Path) -> None:
    reference = raw_gguf_model_dir(smollm2_gguf, smollm2_dir, tmp_path / "raw")
    prompt = [1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198]
    assert_same_logits(smollm2_dir, reference, prompt, atol=1e-3)


def test_bundled_model_answers_paris(smollm2_dir: Path) -> None:
    from mlx_lm import generate, load

    model, tokenizer = load(str(smollm2_dir))
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    text = generate(model, tokenizer, prompt, max_tokens=20, verbose=False)
    assert "Paris" in text


def test_reimport_of_same_file_is_skipped(smollm2_dir: Path, smollm2_gguf: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in smollm2_dir.iterdir()}
    summary = import_gguf(smollm2_gguf, smollm2_dir, progress=False)
    assert summary.skipped and summary.bytes_written == 0 and summary.num_layers == 30
    assert {p.name: p.stat().st_mtime_ns for p in smollm2_dir.iterdir()} == before


# --- tiny synthetic models ---------------------------------------------------------------------------------


def test_tiny_mixed_types_untied_and_sharded(tmp_path: Path) -> None:
    src = write_tiny_llama(tmp_path / "tiny.gguf", layer_type=Q4_0, embed_type=Q8_0, output_type=F16)
    dst = tmp_path / "out" / "model"
    summary = import_gguf(src, dst, progress=False, shard_bytes=40_000)
    assert not summary.skipped and summary.num_layers == 2 and summary.tensors == 2 * 9 + 3
    shards = sorted(p.name for p in dst.glob("model*.safetensors"))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    weights = load_dir_weights(dst)
    assert set(index["weight_map"]) == set(weights)
    for name, shard in index["weight_map"].items():
        assert name in mx.load(str(dst / shard))
    cfg = json.loads((dst / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is False
    assert cfg["quantization"] == {"group_size": 32, "bits": 4, "mode": "affine",
                                   "model.embed_tokens": {"group_size": 32, "bits": 8}}
    assert weights["lm_head.weight"].dtype == mx.float16 and weights["lm_head.weight"].shape == (262, 64)
    assert weights["model.norm.weight"].dtype == mx.float32
    # Q4_0 / Q8_0 / F16 repacking equals mx.load's own GGUF reader, and the model computes the same.
    reference = raw_gguf_model_dir(src, dst, tmp_path / "raw")
    assert_same_logits(dst, reference, [5, 80, 81, 258, 3], atol=1e-4)
    from mlx_lm import load

    model, tokenizer = load(str(dst))
    # Through the loaded tokenizer: "Ġ t" then "h e" then "Ġt he" merge " the" into one token (id 260).
    assert tokenizer.encode(" the") == [260] and tokenizer.encode("the") == [2 + ord("t"), 259]
    assert model.args.tie_word_embeddings is False


def test_tiny_bf16_and_q4_1_are_kept_exactly(tmp_path: Path) -> None:
    meta = tiny_llama_metadata()
    tensors = tiny_llama_tensors(meta, np.random.default_rng(1), layer_type=Q4_1, embed_type=BF16, output_type=None)
    src = write_gguf(tmp_path / "bf16.gguf", meta, tensors)
    dst = tmp_path / "model"
    import_gguf(src, dst, progress=False)
    weights = load_dir_weights(dst)
    embed = weights["model.embed_tokens.weight"]
    assert embed.dtype == mx.bfloat16  # mx.load would have turned BF16 into float16
    raw = np.frombuffer(tensors[0].data, dtype=np.uint16).reshape(262, 64)
    assert np.array_equal(np.array(embed.view(mx.uint16)), raw)
    cfg = json.loads((dst / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is True
    assert cfg["quantization"] == {"group_size": 32, "bits": 4, "mode": "affine"}
    from mlx_lm import load

    load(str(dst))  # loads strictly: every parameter present with the right shape


def test_tiny_attention_biases_follow_the_qk_rows(tmp_path: Path) -> None:
    src = write_tiny_llama(tmp_path / "bias.gguf", attention_bias=True, output_type=None)
    dst = tmp_path / "model"
    import_gguf(src, dst, progress=False)
    cfg = json.loads((dst / "config.json").read_text())
    assert cfg["attention_bias"] is True and cfg["mlp_bias"] is False
    ours, ref = load_dir_weights(dst), mx.load(str(src))
    q_bias = np.array(ours["model.layers.1.self_attn.q_proj.bias"])
    assert np.array_equal(gguf_row_order(q_bias, 4), np.array(ref["blk.1.attn_q.bias"]))
    assert np.array_equal(np.array(ours["model.layers.1.self_attn.v_proj.bias"]), np.array(ref["blk.1.attn_v.bias"]))
    reference = raw_gguf_model_dir(src, dst, tmp_path / "raw")
    assert_same_logits(dst, reference, [5, 80, 81, 258, 3], atol=1e-4)


def test_progress_bar_on_stderr(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    src = write_tiny_llama(tmp_path / "tiny.gguf")
    import_gguf(src, tmp_path / "model", progress=True)
    assert "importing tiny.gguf" in capfd.readouterr().err
    import_gguf(src, tmp_path / "quiet", progress=False)
    assert capfd.readouterr().err == ""


# --- the output directory ----------------------------------------------------------------------------------


def test_refuses_non_empty_directory_that_is_not_an_import(tmp_path: Path) -> None:
    src = write_tiny_llama(tmp_path / "tiny.gguf")
    dst = tmp_path / "model"
    dst.mkdir()
    (dst / "notes.txt").write_text("mine")
    with pytest.raises(GGUFImportError, match="not empty.*refusing"):
        import_gguf(src, dst, progress=False)
    assert (dst / "notes.txt").read_text() == "mine" and sorted(p.name for p in dst.iterdir()) == ["notes.txt"]


def test_empty_directory_is_used(tmp_path: Path) -> None:
    dst = tmp_path / "model"
    dst.mkdir()
    import_gguf(write_tiny_llama(tmp_path / "tiny.gguf"), dst, progress=False)
    assert (dst / "config.json").is_file() and no_leftovers(tmp_path) == []


def test_refuses_import_of_a_different_file(tmp_path: Path) -> None:
    a = write_tiny_llama(tmp_path / "a.gguf", seed=1)
    b = write_tiny_llama(tmp_path / "b.gguf", seed=2)
    dst = tmp_path / "model"
    import_gguf(a, dst, progress=False)
    with pytest.raises(GGUFImportError, match=r"holds an import of 'a.gguf'.*not of b.gguf"):
        import_gguf(b, dst, progress=False)
    assert json.loads((dst / "boltpipe_import.json").read_text())["source"]["name"] == "a.gguf"


def test_import_from_older_importer_is_replaced(tmp_path: Path) -> None:
    src = write_tiny_llama(tmp_path / "tiny.gguf")
    dst = tmp_path / "model"
    import_gguf(src, dst, progress=False)
    marker_path = dst / "boltpipe_import.json"
    marker = json.loads(marker_path.read_text())
    current = marker["importer_version"]
    marker["importer_version"] = "0"
    marker_path.write_text(json.dumps(marker))
    (dst / "stale.txt").write_text("from the old import")
    summary = import_gguf(src, dst, progress=False)
    assert not summary.skipped and summary.bytes_written > 0
    assert json.loads(marker_path.read_text())["importer_version"] == current
    assert not (dst / "stale.txt").exists() and no_leftovers(tmp_path) == []


# --- refusals -----------------------------------------------------------------------------------------------


def _rejects(src: Path, tmp_path: Path, *patterns: str) -> str:
    dst = tmp_path / "never"
    with pytest.raises(GGUFImportError) as info:
        import_gguf(src, dst, progress=False)
    message = str(info.value)
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in {message!r}"
    assert not dst.exists() and no_leftovers(tmp_path) == []
    return message


def test_missing_source(tmp_path: Path) -> None:
    _rejects(tmp_path / "nope.gguf", tmp_path, "nope.gguf does not exist")


def test_bad_magic(tmp_path: Path) -> None:
    src = tmp_path / "model.safetensors.gguf"
    src.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}" + b"\0" * 64)
    _rejects(src, tmp_path, "not a GGUF file", r"b'GGUF'", r"found b'\\x08")


@pytest.mark.parametrize("version", [1, 4])
def test_unsupported_version(tmp_path: Path, version: int) -> None:
    src = write_gguf(tmp_path / "v.gguf", {"general.architecture": "llama"}, [], version=version)
    _rejects(src, tmp_path, f"GGUF version {version}", "supported versions: 2, 3")


def test_unsupported_architecture(tmp_path: Path) -> None:
    meta = tiny_llama_metadata(arch="mamba")
    src = write_gguf(tmp_path / "g.gguf", meta, tiny_llama_tensors(meta, np.random.default_rng(0)))
    _rejects(src, tmp_path, "'mamba'", "the GGUF importer knows llama, qwen2, qwen3, qwen3moe")


def test_unsupported_quant_type_names_tensor_and_supported_set(tmp_path: Path) -> None:
    meta = tiny_llama_metadata(hidden=256, heads=4, kv_heads=2, ffn=256)
    tensors = tiny_llama_tensors(meta, np.random.default_rng(0))
    tensors = [random_tensor(t.name, TQ2_0, t.shape, np.random.default_rng(0)) if t.name == "blk.1.ffn_up.weight"
               else t for t in tensors]
    src = write_gguf(tmp_path / "k.gguf", meta, tensors)
    _rejects(src, tmp_path, "'blk.1.ffn_up.weight'", "TQ2_0", re.escape(SUPPORTED_TYPES))


def test_unknown_type_id(tmp_path: Path) -> None:
    src = write_gguf(tmp_path / "u.gguf", tiny_llama_metadata(), [Tensor("token_embd.weight", 77, (32, 4), b"\0" * 64)])
    _rejects(src, tmp_path, "'token_embd.weight'", "unknown type id 77", re.escape(SUPPORTED_TYPES))


def test_truncated_in_tensor_data(tmp_path: Path) -> None:
    src = write_tiny_llama(tmp_path / "t.gguf")
    data = src.read_bytes()
    src.write_bytes(data[: len(data) - 1000])
    _rejects(src, tmp_path, "truncated", "'output.weight'", "Fetch the file again")


def test_truncated_in_metadata(tmp_path: Path) -> None:
    src = write_tiny_llama(tmp_path / "t.gguf")
    src.write_bytes(src.read_bytes()[:300])
    _rejects(src, tmp_path, "truncated", "metadata")


def test_unsupported_tokenizer_is_refused_before_writing(tmp_path: Path) -> None:
    src = write_tiny_llama(tmp_path / "s.gguf", meta_overrides={"tokenizer.ggml.model": "rwkv"})
    _rejects(src, tmp_path, "'rwkv'", "byte-level BPE", "SentencePiece")


def test_unexpected_tensor_is_refused(tmp_path: Path) -> None:
    meta = tiny_llama_metadata()
    rng = np.random.default_rng(0)
    tensors = tiny_llama_tensors(meta, rng) + [random_tensor("rope_freqs.weight", F32, (8,), rng)]
    _rejects(write_gguf(tmp_path / "r.gguf", meta, tensors), tmp_path, "rope_freqs", "RoPE scaling")
    tensors[-1] = random_tensor("blk.0.attn_gate_extra.weight", F16, (64, 64), rng)
    _rejects(write_gguf(tmp_path / "x.gguf", meta, tensors), tmp_path, "attn_gate_extra", "not part of a llama model")


def test_q4_1_writer_blocks_round_trip_through_mx_load(tmp_path: Path) -> None:
    # Guards the test helper itself: its random blocks are valid GGUF as read by mlx.
    t = random_tensor("w.weight", Q4_1, (64, 3), np.random.default_rng(3))
    src = write_gguf(tmp_path / "w.gguf", {"general.architecture": "llama"}, [t])
    assert mx.load(str(src))["w.weight"].shape == (3, 64 * 4 // 32)
