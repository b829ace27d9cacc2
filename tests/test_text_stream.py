"""Incremental detokenisation (never a split character) and stop strings (never leaked),
with the real SmolLM2 tokenizer imported from the bundled GGUF."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

import pytest

from cluster.pipeline.text_stream import REPLACEMENT_CHAR, IncrementalDecoder, StopMatcher

TEXTS = [
    "Hi 😀🎉 there",
    "東京タワーは日本の首都にあります。",
    "Café naïve résumé — Ωmega, straße, ångström",
    "👩‍👩‍👧‍👦 family 🇫🇷 flag 🧑🏽‍🚀",
    "mixed: Ünïcödé 漢字 🚀! Ελληνικά и русский 한국어",
    "plain ascii, with  double spaces and\nnew lines\tand tabs",
]


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir: Path):
    from cluster.pipeline.tokenizer import PromptTokenizer

    return PromptTokenizer(smollm2_dir)


class Utf8ByteDecoder:
    """A real byte-level decoder: each id is one byte, decoded like byte-level BPE does."""

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


def stream(decoder, ids: Sequence[int]) -> tuple[list[str], str]:
    dec = IncrementalDecoder(decoder)
    return [dec.add(i) for i in ids], dec.flush()


# --- IncrementalDecoder with the real tokenizer ---------------------------------------------------------


def test_texts_really_split_characters_across_tokens(tokenizer) -> None:
    """Guards the tests below: these texts contain tokens that are only part of a character."""
    split = 0
    for text in TEXTS:
        ids = tokenizer.encode_text(text, add_special_tokens=False)
        assert tokenizer.decode(ids) == text
        split += sum(REPLACEMENT_CHAR in tokenizer.decode([i]) for i in ids)
    assert split > 20


@pytest.mark.parametrize("text", TEXTS)
def test_one_id_at_a_time_never_yields_a_broken_character(tokenizer, text: str) -> None:
    ids = tokenizer.encode_text(text, add_special_tokens=False)
    deltas, tail = stream(tokenizer, ids)
    assert not any(REPLACEMENT_CHAR in d for d in deltas), deltas
    assert "".join(deltas) + tail == tokenizer.decode(ids) == text
    assert tail == ""  # the text ends on a whole character, so nothing is left to flush


@pytest.mark.parametrize("text", TEXTS)
def test_text_is_released_as_soon_as_it_is_whole(tokenizer, text: str) -> None:
    ids = tokenizer.encode_text(text, add_special_tokens=False)
    dec = IncrementalDecoder(tokenizer)
    emitted = ""
    for n, i in enumerate(ids, start=1):
        emitted += dec.add(i)
        so_far = tokenizer.decode(ids[:n])
        if not so_far.endswith(REPLACEMENT_CHAR):
            assert emitted == so_far
        else:
            assert so_far.startswith(emitted)


def test_chat_reply_with_special_tokens_streams_like_a_whole_decode(tokenizer) -> None:
    ids = tokenizer.encode_chat([{"role": "user", "content": "Dis bonjour 👋 à 東京"}])
    ids += tokenizer.encode_text("Bonjour 👋 東京!", add_special_tokens=False)
    deltas, tail = stream(tokenizer, ids)
    assert "".join(deltas) + tail == tokenizer.decode(ids)
    assert not any(REPLACEMENT_CHAR in d for d in deltas)


def test_incomplete_character_at_the_end_is_held_until_flush(tokenizer) -> None:
    ids = tokenizer.encode_text("ok 😀", add_special_tokens=False)
    # Drop tokens from the end until the decoded text ends in a partial character.
    cut = next(n for n in range(len(ids) - 1, 0, -1) if tokenizer.decode(ids[:n]).endswith(REPLACEMENT_CHAR))
    partial = ids[:cut]
    deltas, tail = stream(tokenizer, partial)
    assert "".join(deltas).startswith("ok") and "ok 😀".startswith("".join(deltas))
    assert REPLACEMENT_CHAR in tail
    assert "".join(deltas) + tail == tokenizer.decode(partial)


def test_flush_twice_gives_nothing_new(tokenizer) -> None:
    dec = IncrementalDecoder(tokenizer)
    ids = tokenizer.encode_text("abc 漢", add_special_tokens=False)
    out = "".join(dec.add(i) for i in ids) + dec.flush()
    assert out == "abc 漢"
    assert dec.flush() == ""


# --- IncrementalDecoder over raw UTF-8 bytes (every possible split point) -------------------------------


def test_random_unicode_fed_byte_by_byte() -> None:
    rng = random.Random(2024)
    alphabet = "aZ 9.é߷ह中한😀🚀\u200d🏽" + "\n"
    decoder = Utf8ByteDecoder()
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        ids = list(text.encode("utf-8"))
        deltas, tail = stream(decoder, ids)
        assert not any(REPLACEMENT_CHAR in d for d in deltas)
        assert "".join(deltas) == text and tail == ""


def test_truncated_byte_sequence_comes_out_only_on_flush() -> None:
    decoder = Utf8ByteDecoder()
    ids = list("x€".encode("utf-8"))[:-1]  # 'x' + 2 of the 3 bytes of '€'
    deltas, tail = stream(decoder, ids)
    assert deltas == ["x", "", ""]
    assert tail == decoder.decode(ids)[1:] and REPLACEMENT_CHAR in tail


# --- StopMatcher ---------------------------------------------------------------------------------------


def run_feeds(matcher: StopMatcher, chunks: list[str]) -> tuple[str, bool, int]:
    """Feeds until a stop; returns (emitted text, stopped, number of feeds used)."""
    out = ""
    for n, chunk in enumerate(chunks, start=1):
        text, stopped = matcher.feed(chunk)
        out += text
        if stopped:
            return out, True, n
    return out + matcher.flush(), False, len(chunks)


def test_stop_split_across_many_feeds() -> None:
    m = StopMatcher(["<|im_end|>"])
    text = "Hello there<|im_end|>after"
    out, stopped, used = run_feeds(m, list(text))
    assert (out, stopped) == ("Hello there", True)
    assert used == text.index("<|im_end|>") + len("<|im_end|>")  # stops on the feed that completes it


def test_held_text_grows_while_it_could_still_be_a_stop() -> None:
    m = StopMatcher(["STOP"])
    assert m.feed("abc S") == ("abc ", False)
    assert m.feed("T") == ("", False)
    assert m.feed("O") == ("", False)
    assert m.feed("P and more") == ("", True)
    assert m.flush() == ""


def test_look_alike_prefix_is_released() -> None:
    m = StopMatcher(["</s>"])
    assert m.feed("a <") == ("a ", False)
    assert m.feed("/") == ("", False)
    assert m.feed("b") == ("</b", False)
    assert m.feed("</s") == ("", False)
    assert m.feed(">") == ("", True)


def test_overlapping_false_start_then_real_stop() -> None:
    # "ababc" contains the stop "abc" starting at 2; the first "ab" is not a stop.
    m = StopMatcher(["abc"])
    out, stopped, _ = run_feeds(m, list("xababcz"))
    assert (out, stopped) == ("xab", True)


def test_earliest_stop_wins_whatever_the_list_order() -> None:
    for stops in (["END", "STOP"], ["STOP", "END"]):
        assert StopMatcher(stops).feed("one STOP two END") == ("one ", True)
        assert StopMatcher(stops).feed("one END two STOP") == ("one ", True)


def test_earliest_start_wins_even_if_it_completes_later_in_the_same_chunk() -> None:
    # "LONGSTOP" starts before "X" but both are complete in one chunk.
    assert StopMatcher(["X", "LONGSTOP"]).feed("aLONGSTOPbX") == ("a", True)
    # Across feeds, the stop that completes first is reported first.
    m = StopMatcher(["X", "LONGSTOP"])
    assert m.feed("aLONG") == ("a", False)
    assert m.feed("STXOP") == ("LONGST", True)


def test_nothing_after_the_stop_leaks() -> None:
    m = StopMatcher(["\n\n"])
    assert m.feed("line one\n\nsecret tail") == ("line one", True)
    assert m.flush() == ""


def test_stop_at_the_very_start() -> None:
    assert StopMatcher(["<|im_end|>"]).feed("<|im_end|>hello") == ("", True)


def test_flush_returns_held_text_once() -> None:
    m = StopMatcher(["<|im_end|>"])
    assert m.feed("answer <|im") == ("answer ", False)
    assert m.flush() == "<|im"
    assert m.flush() == ""


def test_empty_stop_list_and_empty_stops_pass_everything() -> None:
    for stops in ([], [""], ("",)):
        m = StopMatcher(stops)
        assert m.stops == []
        for chunk in ["a", "<|im_end|", "", "😀 x"]:
            assert m.feed(chunk) == (chunk, False)
        assert m.flush() == ""


def test_unicode_stop_strings() -> None:
    m = StopMatcher(["。", "🛑"])
    assert m.feed("東京") == ("東京", False)
    assert m.feed("です🛑。") == ("です", True)


def longest_held(pending: str, stops: list[str]) -> int:
    return max(
        (n for s in stops for n in range(1, len(s)) if len(pending) >= n and pending.endswith(s[:n])),
        default=0,
    )


def test_random_streams_against_a_reference() -> None:
    rng = random.Random(77)
    for _ in range(2000):
        stops = ["".join(rng.choice("abc") for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(0, 3))]
        text = "".join(rng.choice("abcd") for _ in range(rng.randint(0, 25)))
        # Split the text into random chunks.
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 6))))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]

        m = StopMatcher(stops)
        emitted, fed = "", ""
        for chunk in chunks:
            out, stopped = m.feed(chunk)
            emitted += out
            fed += chunk
            hits = [fed.find(s) for s in stops if s in fed]
            # The first feed after which the text holds a stop ends it, cut where the
            # earliest stop in the text so far begins.
            assert stopped == bool(hits), (stops, chunks)
            if stopped:
                assert emitted == fed[: min(hits)], (stops, chunks)
                assert m.flush() == ""
                break
            # Otherwise everything is released except the longest tail that could still begin a stop.
            assert emitted == fed[: len(fed) - longest_held(fed, stops)], (stops, chunks)
        else:
            assert emitted + m.flush() == text


# --- both together, as the engine uses them ---------------------------------------------------------


def test_decoder_then_stop_matcher_with_real_tokens(tokenizer) -> None:
    reply = "答えは東京です。🗼 それから"
    ids = tokenizer.encode_text(reply, add_special_tokens=False)
    dec, stop = IncrementalDecoder(tokenizer), StopMatcher(["🗼"])
    out, stopped = "", False
    for i in ids:
        text, stopped = stop.feed(dec.add(i))
        out += text
        assert REPLACEMENT_CHAR not in text
        if stopped:
            break
    assert stopped and out == "答えは東京です。"
