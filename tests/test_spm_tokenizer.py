"""SentencePiece-style GGUF vocabularies (tokenizer.ggml.model = "llama": Llama 2, Mistral v0.1, Gemma,
Phi-3) rebuilt into tokenizer.json give SentencePiece's own ids for a vocabulary it trained here
(tests/spm_vocab.py), with and without the space prefix, BOS as the file says, special tokens matched
in text as llama.cpp matches them, exact round trips, and mlx-lm's loader and chat template on top."""

from __future__ import annotations

import pytest

from node.gguf.tokenizer import build_tokenizer, write_tokenizer
from tests.spm_vocab import spm_metadata, trained

TEXTS = [
    "Hello world",
    " leading space",
    "two  spaces and\nnewline\n\n  indented",
    "numbers 12345 and 3.14",
    "naïve café 東京 🙂 ½",          # mostly outside the vocabulary: byte fallback
    "cluster up inventory.yaml --detach",
    "trailing spaces   ",
    "\ttab",
]
# (architecture, SentencePiece's dummy prefix): Llama 2 / Mistral v0.1 and Phi-3 have it, Gemma does not.
KINDS = [("llama", True), ("phi3", True), ("gemma3", False)]


def _tokenizer(arch: str, prefix: bool):
    sp = trained(prefix)
    return sp, build_tokenizer({"general.architecture": arch, **spm_metadata(sp, space_prefix=prefix)})


@pytest.mark.parametrize("arch, prefix", KINDS)
def test_ids_equal_sentencepiece(arch: str, prefix: bool) -> None:
    sp, tok = _tokenizer(arch, prefix)
    for text in TEXTS:
        assert tok.encode(text).ids == [sp.bos_id(), *sp.encode(text)], text
        assert tok.encode(text, add_special_tokens=False).ids == sp.encode(text), text


@pytest.mark.parametrize("arch, prefix", KINDS)
def test_round_trips(arch: str, prefix: bool) -> None:
    _, tok = _tokenizer(arch, prefix)
    for text in TEXTS + ["", " "]:
        assert tok.decode(tok.encode(text, add_special_tokens=False).ids, skip_special_tokens=False) == text


def test_special_tokens_in_text_are_single_ids_and_text_after_them_gets_the_prefix() -> None:
    """As llama.cpp's SPM tokenizer does with special tokens parsed: `</s>` is one id, and the text
    after a special token opens with the word mark again."""
    sp, tok = _tokenizer("llama", True)
    ids = tok.encode("hi</s>there", add_special_tokens=False).ids
    assert ids == [*sp.encode("hi"), sp.eos_id(), *sp.encode("there")]


def test_bos_only_when_the_file_says() -> None:
    sp = trained(True)
    meta = {"general.architecture": "llama", **spm_metadata(sp, space_prefix=True)}
    meta["tokenizer.ggml.add_bos_token"] = False
    assert build_tokenizer(meta).encode("Hello").ids == sp.encode("Hello")
    del meta["tokenizer.ggml.add_bos_token"]  # llama.cpp's default for SentencePiece: add it
    assert build_tokenizer(meta).encode("Hello").ids == [sp.bos_id(), *sp.encode("Hello")]


def test_mlx_lm_loads_it_with_the_files_chat_template(tmp_path) -> None:
    from mlx_lm.tokenizer_utils import load

    sp = trained(True)
    template = "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
    meta = {"general.architecture": "llama", **spm_metadata(sp, space_prefix=True, chat_template=template)}
    write_tokenizer(meta, tmp_path, 4096)
    wrapper = load(tmp_path)
    assert wrapper.encode("Hello world") == [sp.bos_id(), *sp.encode("Hello world")]
    assert wrapper.eos_token_id == sp.eos_id()
    text = wrapper.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<s>[INST] Hi [/INST]"
    assert wrapper.decode(sp.encode("cluster up inventory.yaml")) == "cluster up inventory.yaml"
