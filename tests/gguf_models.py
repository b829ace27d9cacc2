"""Tiny random models of several families written as GGUF the way llama.cpp's converter lays them
out (its tensor names from the `gguf` package's tables, a Llama's q/k rows permuted for its RoPE,
stacked experts), next to the mlx-lm directory of the same weights: importing the GGUF must give a
model whose tokens equal that directory's."""

from __future__ import annotations

from pathlib import Path

import gguf
import gguf.vocab
import numpy as np
from mlx.utils import tree_flatten

from tests.tiny_models import build_model, family_config, write_tiny_model

MERGES = ["Ġ t", "h e"]
VOCAB = 256 + len(MERGES)   # GPT-2's 256 byte tokens and two merges
GGUF_ARCH = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "qwen3_moe": "qwen3moe", "gemma2": "gemma2",
             "gemma3_text": "gemma3", "phi3": "phi3", "gpt_oss": "gpt-oss"}
# What llama.cpp fixes in a Gemma 3 (its sliding-window pattern) the tiny config must have too.
GGUF_OVERRIDES = {"gemma3_text": dict(sliding_window_pattern=6)}


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order: within a head, rotate-half pairs interleaved."""
    rows = w.shape[0]
    return w.reshape(heads, 2, rows // heads // 2, -1).swapaxes(1, 2).reshape(w.shape)


def family_gguf(path: Path, model_type: str, *, float_type=gguf.GGMLQuantizationType.F32,
                model_dir: Path | None = None, spm_prefix: bool | None = None, extra_tensors: dict | None = None,
                **overrides) -> Path:
    """Write `model_type`'s tiny model as GGUF at `path` (and, with `model_dir`, as an mlx-lm
    directory there: the same weights). `spm_prefix` not None: a SentencePiece vocabulary
    (tests/spm_vocab.py, with or without its space prefix) instead of the byte-level one;
    `extra_tensors`: more GGUF tensors (name -> float32 array), e.g. a vision tower's."""
    from tests.spm_vocab import VOCAB_SIZE, spm_metadata, trained

    overrides = {"vocab_size": VOCAB if spm_prefix is None else VOCAB_SIZE, "mlp_only_layers": [], **GGUF_OVERRIDES.get(model_type, {}), **overrides}
    if model_type != "qwen3_moe":
        overrides.pop("mlp_only_layers")
    config = family_config(model_type, **overrides)
    if model_dir is not None:
        write_tiny_model(model_dir, model_type, **overrides)
    model = build_model(config)
    arch = GGUF_ARCH[model_type]
    names = gguf.get_tensor_name_map(next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch),
                                     config["num_hidden_layers"])
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(config["hidden_size"])
    w.add_block_count(config["num_hidden_layers"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(config["num_attention_heads"])
    w.add_head_count_kv(config["num_key_value_heads"])
    w.add_key_length(config["head_dim"])
    w.add_value_length(config["head_dim"])
    w.add_rope_dimension_count(config["head_dim"])
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    w.add_rope_freq_base(config["rope_theta"])
    if model_type == "gemma2":
        w.add_attn_logit_softcapping(config["attn_logit_softcapping"])
        w.add_final_logit_softcapping(config["final_logit_softcapping"])
    if model_type == "gemma3_text":
        w.add_sliding_window(config["sliding_window"])
    if (config.get("rope_scaling") or {}).get("rope_type") == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(config["rope_scaling"]["factor"])
        w.add_rope_scaling_orig_ctx_len(config["rope_scaling"]["original_max_position_embeddings"])
    if model_type == "gpt_oss":
        w.add_expert_count(config["num_local_experts"])
        w.add_expert_used_count(config["num_experts_per_tok"])
        w.add_expert_feed_forward_length(config["intermediate_size"])
        w.add_sliding_window(config["sliding_window"])
    if model_type == "qwen3_moe":
        w.add_expert_count(config["num_experts"])
        w.add_expert_used_count(config["num_experts_per_tok"])
        w.add_expert_feed_forward_length(config["moe_intermediate_size"])
    if spm_prefix is None:
        byte_to_unicode = gguf.vocab.bytes_to_unicode()
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt2")
        w.add_token_list([byte_to_unicode[b] for b in range(256)] + [m.replace(" ", "") for m in MERGES])
        w.add_token_types([gguf.TokenType.NORMAL] * VOCAB)
        w.add_token_merges(MERGES)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
    else:
        for key, value in spm_metadata(trained(spm_prefix), space_prefix=spm_prefix).items():
            kind = {str: gguf.GGUFValueType.STRING, bool: gguf.GGUFValueType.BOOL, int: gguf.GGUFValueType.UINT32,
                    list: gguf.GGUFValueType.ARRAY}[type(value)]
            sub = None if kind != gguf.GGUFValueType.ARRAY else {
                str: gguf.GGUFValueType.STRING, float: gguf.GGUFValueType.FLOAT32,
                int: gguf.GGUFValueType.INT32}[type(value[0])]
            w.add_key_value(key, value, kind, sub)
    for name, data in (extra_tensors or {}).items():
        w.add_tensor(name, np.asarray(data, dtype=np.float32))
    for name, value in tree_flatten(model.parameters()):
        module, _, suffix = name.rpartition(".")
        target = names.get_name(module.replace(".switch_mlp.", ".experts."))
        if target is None:  # a parameter of its own (gpt-oss's attention sinks)
            target, suffix = names.get_name(name), "weight"
        data = np.array(value).astype(np.float32)
        if arch == "llama" and module.endswith(("q_proj", "k_proj")):
            data = _permute(data, config["num_attention_heads" if module.endswith("q_proj") else "num_key_value_heads"])
        if arch.startswith("gemma") and target.endswith("norm"):
            data = data + 1  # llama.cpp stores Gemma's norms as 1 + w
        if float_type == gguf.GGMLQuantizationType.F32 or data.ndim == 1 or (
                float_type == gguf.GGMLQuantizationType.MXFP4 and not (".experts." in name and suffix == "weight")):
            w.add_tensor(f"{target}.{suffix}", data)  # MXFP4: experts only, as gpt-oss files hold it
        else:
            w.add_tensor(f"{target}.{suffix}", gguf.quants.quantize(data, float_type), raw_dtype=float_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def llama_gguf(path: Path, **kwargs) -> Path:
    return family_gguf(path, "llama", **kwargs)


def copy_metadata(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> None:
    """Every key of `reader`'s file but the ones the writer owns (header fields, architecture)."""
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), field.types[0], sub)


def k_quant_demo(source: Path, path: Path) -> Path:
    """The bundled SmolLM2 as llama-quantize's Q4_K_M would leave it: rows that are whole 256-value
    super-blocks (ffn_down, 1536 wide) in Q4_K and, every other layer, Q6_K; the 576-wide rest in the
    fallbacks Q5_0 (and Q8_0 for attn_v and the embedding), norms in F32.

    The values come from the bundled Q4_1 file, so each tensor is quantized a second time. This
    135M model's answer to "What is the capital of France?" (with its default system prompt) does not
    survive that: it turns French even when ffn_down alone goes Q4_1 -> Q8_0, the finest of these
    types; questions about Germany and Italy keep their answers."""
    from tests.kquant_writer import quantize_q4_k, quantize_q6_k

    reader = gguf.GGUFReader(str(source))
    writer = gguf.GGUFWriter(str(path), "llama")
    copy_metadata(reader, writer)
    q = gguf.GGMLQuantizationType
    for t in reader.tensors:
        if t.tensor_type == q.F32:
            writer.add_tensor(t.name, np.array(t.data))
            continue
        values = gguf.quants.dequantize(np.array(t.data), t.tensor_type)
        if t.name.endswith("ffn_down.weight"):
            layer = int(t.name.split(".")[1])
            kind, data = (q.Q6_K, quantize_q6_k(values)) if layer % 2 else (q.Q4_K, quantize_q4_k(values))
        elif t.name.endswith(("attn_v.weight", "token_embd.weight")):
            kind, data = q.Q8_0, gguf.quants.quantize(values, q.Q8_0)
        else:
            kind, data = q.Q5_0, gguf.quants.quantize(values, q.Q5_0)
        writer.add_tensor(t.name, data, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
