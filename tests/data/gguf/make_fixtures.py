"""How the GGUF fixtures in this folder were made (run by hand; the tests never run it).

A tiny random Llama (hidden 256, one layer, 4 heads of 64 / 2 KV heads, MLP 512, a byte-level
vocabulary of the 256 bytes and two merges), written as F32 GGUF with the `gguf` package the way llama.cpp lays a Llama
out (q/k rows permuted for its RoPE), then quantized by llama.cpp's own llama-quantize (built from
the llama.cpp vendored in llama-cpp-python 0.3.36) into one file per tensor type (--pure: every
matrix in that type) and one Q4_K_M mix as Ollama ships it. Rows are 256 or 512 wide, so the
K-quants apply everywhere.

    python tests/data/gguf/make_fixtures.py /path/to/llama-quantize
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gguf
import gguf.vocab
import numpy as np

HERE = Path(__file__).resolve().parent
HIDDEN, HEADS, KV_HEADS, FFN = 256, 4, 2, 512
MERGES = ["Ġ t", "h e"]
VOCAB = 256 + len(MERGES)
PURE_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS")


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order: within a head, rotate-half pairs interleaved."""
    rows = w.shape[0]
    return w.reshape(heads, 2, rows // heads // 2, -1).swapaxes(1, 2).reshape(w.shape)


def write_f32(path: Path) -> None:
    rng = np.random.default_rng(16)
    head_dim = HIDDEN // HEADS

    def rand(*shape):
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("boltpipe-tiny-llama")
    w.add_context_length(512)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(1)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(head_dim)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    byte_to_unicode = gguf.vocab.bytes_to_unicode()   # GPT-2's alphabet: one token per byte, then the merges
    w.add_token_list([byte_to_unicode[b] for b in range(256)] + [m.replace(" ", "") for m in MERGES])
    w.add_token_types([gguf.TokenType.NORMAL] * VOCAB)
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_tensor("token_embd.weight", rand(VOCAB, HIDDEN))
    w.add_tensor("blk.0.attn_norm.weight", 1 + rand(HIDDEN))
    w.add_tensor("blk.0.attn_q.weight", _permute(rand(HIDDEN, HIDDEN), HEADS))
    w.add_tensor("blk.0.attn_k.weight", _permute(rand(KV_HEADS * head_dim, HIDDEN), KV_HEADS))
    w.add_tensor("blk.0.attn_v.weight", rand(KV_HEADS * head_dim, HIDDEN))
    w.add_tensor("blk.0.attn_output.weight", rand(HIDDEN, HIDDEN))
    w.add_tensor("blk.0.ffn_norm.weight", 1 + rand(HIDDEN))
    w.add_tensor("blk.0.ffn_gate.weight", rand(FFN, HIDDEN))
    w.add_tensor("blk.0.ffn_up.weight", rand(FFN, HIDDEN))
    w.add_tensor("blk.0.ffn_down.weight", rand(HIDDEN, FFN))
    w.add_tensor("output_norm.weight", 1 + rand(HIDDEN))
    w.add_tensor("output.weight", rand(VOCAB, HIDDEN))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main(quantize: str) -> None:
    source = HERE / "tiny-llama-F32.gguf"   # not committed: 2.9 MB, and the tests compare with gguf's dequantization
    write_f32(source)
    for kind in PURE_TYPES:
        subprocess.run([quantize, "--pure", str(source), str(HERE / f"tiny-llama-{kind}.gguf"), kind], check=True,
                       capture_output=True)
    subprocess.run([quantize, str(source), str(HERE / "tiny-llama-Q4_K_M.gguf"), "Q4_K_M"], check=True,
                   capture_output=True)
    source.unlink()


if __name__ == "__main__":
    main(sys.argv[1])
