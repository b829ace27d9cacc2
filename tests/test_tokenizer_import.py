"""The tokenizer rebuilt from GGUF metadata: llama.cpp's ids, exact round trips, chat template, loaders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.gguf import GGUFImportError
from node.gguf.tokenizer import build_tokenizer, supported_pre_tokenizers
from tests.conftest import TESTS_DATA
from tests.gguf_writer import tiny_llama_metadata

# llama.cpp's own tokenizer on the bundled GGUF produced these ids; they are the contract.
REFERENCE = json.loads((TESTS_DATA / "smollm2-token-ids.json").read_text())
CASES = REFERENCE["cases"]

ROUND_TRIPS = [
    "Numbers 0 7 42 2026 3.14159 -17 1e10 ٣٤٥ ½",
    "  two leading, three trailing   ",
    "tabs\t\tand\n\n\n  newlines \r\n mixed",
    "emoji 🚀🔥👩‍👩‍👧 ✅ and flags 🇫🇷",
    "CJK 你好，世界！日本語のテキスト。한국어 텍스트",
    "special tokens inline <|im_start|>user<|im_end|> and <repo_name>",
    "",
    " ",
]


@pytest.fixture(scope="module")
def hf_tokenizer(smollm2_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_dir))


@pytest.fixture(scope="module")
def mlx_tokenizer(smollm2_dir: Path):
    from mlx_lm.tokenizer_utils import load

    return load(smollm2_dir)


@pytest.mark.parametrize("case", CASES, ids=[c["text"][:24] for c in CASES])
def test_matches_llama_cpp_ids(hf_tokenizer, mlx_tokenizer, case: dict) -> None:
    assert hf_tokenizer.encode(case["text"]) == case["ids"]
    assert mlx_tokenizer.encode(case["text"]) == case["ids"]


def test_all_reference_cases_present() -> None:
    # A silently emptied file must not pass.
    assert len(CASES) >= 12 and all(c["ids"] for c in CASES)


@pytest.mark.parametrize("text", ROUND_TRIPS + [c["text"] for c in CASES])
def test_round_trip(hf_tokenizer, mlx_tokenizer, text: str) -> None:
    ids = hf_tokenizer.encode(text)
    assert hf_tokenizer.decode(ids) == text
    # mlx-lm's streaming detokenizer (what a server streams token by token) gives the same text,
    # except that by its own design it drops one space at the very start of a stream.
    detok = mlx_tokenizer.detokenizer
    detok.reset()
    for i in ids:
        detok.add_token(i)
    detok.finalize()
    assert detok.text == (text[1:] if text.startswith(" ") else text)


def test_digits_are_split_one_by_one(hf_tokenizer) -> None:
    pieces = hf_tokenizer.convert_ids_to_tokens(hf_tokenizer.encode("year 2026"))
    assert pieces == ["year", "Ġ", "2", "0", "2", "6"]


def test_chat_template_and_eos(mlx_tokenizer, smollm2_dir: Path) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    text = mlx_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    assert text.startswith("<|im_start|>system\n")  # the template's default system prompt
    assert mlx_tokenizer.eos_token == "<|im_end|>" and mlx_tokenizer.eos_token_id == 2
    assert mlx_tokenizer.eos_token_ids == {2}
    ids = mlx_tokenizer.encode(text)
    assert ids[0] == 1 and ids[-4:] == [1, 520, 9531, 198]  # no BOS prepended: first id is <|im_start|>
    cfg = json.loads((smollm2_dir / "tokenizer_config.json").read_text())
    assert cfg["model_max_length"] == 8192 and cfg["add_bos_token"] is False
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (cfg["bos_token"], cfg["unk_token"], cfg["pad_token"]) == ("<|im_start|>", "<|endoftext|>", "<|im_end|>")
    assert cfg["chat_template"].startswith("{% for message in messages %}")


def test_control_tokens_are_special(hf_tokenizer) -> None:
    ids = hf_tokenizer.encode("<|im_start|>hi<|im_end|>")
    assert ids[0] == 1 and ids[-1] == 2
    assert hf_tokenizer.decode(ids, skip_special_tokens=True) == "hi"


# --- metadata variants, on the tiny vocabulary ---------------------------------------------------------


def _pieces(meta: dict, text: str) -> list[str]:
    return [p for p, _ in build_tokenizer(meta).pre_tokenizer.pre_tokenize_str(text)]


def test_pre_tokenizer_families() -> None:
    text = "x 12345 hi\n\nyo"
    # GPT-2's "\s+(?!\S)" leaves the newline before a word on its own (as in the reference ids).
    assert _pieces(tiny_llama_metadata(pre="smollm"), text) == ["x", "Ġ", "1", "2", "3", "4", "5", "Ġhi", "Ċ", "Ċ", "yo"]
    assert _pieces(tiny_llama_metadata(pre="gpt-2"), text) == ["x", "Ġ12345", "Ġhi", "Ċ", "Ċ", "yo"]
    # Llama 3: numbers in runs of at most three, newline runs kept whole.
    assert _pieces(tiny_llama_metadata(pre="llama-bpe"), text) == ["x", "Ġ", "123", "45", "Ġhi", "ĊĊ", "yo"]


def test_llama_bpe_takes_whole_vocabulary_words() -> None:
    # "ignore_merges": a piece that is itself a token is not re-merged from characters.
    meta = tiny_llama_metadata(pre="llama-bpe")
    meta["tokenizer.ggml.tokens"] = meta["tokenizer.ggml.tokens"] + ["Ġhello"]
    meta["tokenizer.ggml.token_type"] = meta["tokenizer.ggml.token_type"] + [1]
    tok = build_tokenizer(meta)
    assert tok.encode(" hello").ids == [len(meta["tokenizer.ggml.tokens"]) - 1]
    assert build_tokenizer({**meta, "tokenizer.ggml.pre": "gpt-2"}).encode(" hello").ids != tok.encode(" hello").ids


def test_bos_added_only_when_metadata_says_so() -> None:
    with_bos = build_tokenizer(tiny_llama_metadata(add_bos=True))
    without = build_tokenizer(tiny_llama_metadata(add_bos=False))
    assert with_bos.encode(" the").ids == [1, 260]
    assert without.encode(" the").ids == [260]


def test_user_defined_tokens_match_but_are_not_special() -> None:
    meta = tiny_llama_metadata()
    meta["tokenizer.ggml.tokens"] = meta["tokenizer.ggml.tokens"] + ["<tool>"]
    meta["tokenizer.ggml.token_type"] = meta["tokenizer.ggml.token_type"] + [4]
    tok = build_tokenizer(meta)
    tool = len(meta["tokenizer.ggml.tokens"]) - 1
    ids = tok.encode("a<tool>b").ids
    assert tool in ids
    assert tok.decode(ids, skip_special_tokens=True) == "a<tool>b"


def test_unsupported_pre_tokenizer_names_the_supported_ones() -> None:
    with pytest.raises(GGUFImportError) as info:
        build_tokenizer(tiny_llama_metadata(pre="deepseek-llm"))
    message = str(info.value)
    assert "'deepseek-llm'" in message
    for name in ("smollm", "gpt-2", "llama-bpe"):
        assert name in message and name in supported_pre_tokenizers()


def test_an_unknown_tokenizer_model_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(GGUFImportError, match=r"tokenizer model .* is 'rwkv'.*byte-level BPE.*SentencePiece"):
        build_tokenizer(tiny_llama_metadata(tokenizer_model="rwkv"))


def test_pre_tokenizers_from_transformers_tables_split_like_theirs() -> None:
    """Qwen2's split (llama.cpp "qwen2"): every digit alone, letters in runs."""
    assert "qwen2" in supported_pre_tokenizers() and "tekken" in supported_pre_tokenizers()
    assert _pieces(tiny_llama_metadata(pre="qwen2"), "x 12345 hi\n\nyo") == [
        "x", "Ġ", "1", "2", "3", "4", "5", "Ġhi", "ĊĊ", "yo"]
