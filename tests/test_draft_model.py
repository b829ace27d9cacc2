"""The coordinator's draft model (cluster/pipeline/draft_model.py): its guesses are the draft model's
own greedy continuation of the history (mlx-lm's generation loop in this process), and after a trip
kept only some of them, the rolled-back cache guesses exactly as a fresh one given the true history
does. A draft model with another tokenizer, or whose caches cannot roll back, is refused with the
reason; an inventory's model.draft is parsed and selects the drafter."""

from __future__ import annotations

import asyncio
from pathlib import Path

import mlx.core as mx
import pytest

from cluster.inventory import parse_inventory
from cluster.pipeline.draft_model import DraftModel, DraftModelError
from tests.stage_chain import mlx_lm_greedy
from tests.tiny_models import write_tiny_model

VOCAB = {f"t{i}": i for i in range(128)}


def history(length: int) -> list[int]:
    return [int(t) for t in mx.random.randint(0, 128, (length,), key=mx.random.key(7))]


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("draft") / "llama", "llama")


def test_guesses_are_the_draft_models_greedy_tokens_and_survive_rollback(llama: Path) -> None:
    draft = DraftModel(llama, VOCAB, VOCAB)
    try:
        session = draft.session()
        start = history(9)
        truth = mlx_lm_greedy(llama, start, 12)
        guesses, seconds = asyncio.run(session.propose(start, 4))
        assert guesses == truth[:4] and seconds > 0
        # The pipeline kept two of them and chose another token: the cache drops the rest.
        kept = start + truth[:2] + [(truth[2] + 1) % 128]
        again, _ = asyncio.run(session.propose(kept, 3))
        fresh, _ = asyncio.run(draft.session().propose(kept, 3))
        assert again == fresh == mlx_lm_greedy(llama, kept, 3)
        assert session.fed == kept + again[:2]
        # Everything kept, then one more token: nothing to drop, only new tokens to read.
        longer = kept + again + [5]
        assert asyncio.run(session.propose(longer, 2))[0] == mlx_lm_greedy(llama, longer, 2)
    finally:
        draft.close()


def test_a_draft_model_with_another_tokenizer_is_refused(llama: Path) -> None:
    other = dict(VOCAB, t5=200)
    with pytest.raises(DraftModelError, match="another tokenizer"):
        DraftModel(llama, VOCAB, other)


def test_a_draft_model_whose_caches_cannot_roll_back_is_refused(tmp_path: Path) -> None:
    model_dir = write_tiny_model(tmp_path / "qwen3_next", "qwen3_next")
    with pytest.raises(DraftModelError, match="cannot be rolled back"):
        DraftModel(model_dir, VOCAB, VOCAB)


def test_the_inventory_names_a_draft_model_and_that_selects_the_drafter(tmp_path: Path) -> None:
    (tmp_path / "big").mkdir()
    (tmp_path / "small").mkdir()
    nodes = [{"name": "w1", "host": "127.0.0.1", "port": 50061}]
    inv = parse_inventory({"model": {"path": "big", "draft": {"path": "small"}}, "nodes": nodes},
                          source=tmp_path / "inv.yaml")
    assert inv.model.draft.path == (tmp_path / "small").resolve() and inv.speculation == "draft_model"
    inv = parse_inventory({"model": {"path": "big", "draft": {"path": "small"}}, "nodes": nodes,
                           "pipeline": {"speculation": "prompt_lookup"}}, source=tmp_path / "inv.yaml")
    assert inv.speculation == "prompt_lookup"
    with pytest.raises(ValueError, match="draft_model needs model.draft"):
        parse_inventory({"model": {"path": "big"}, "nodes": nodes, "pipeline": {"speculation": "draft_model"}},
                        source=tmp_path / "inv.yaml")
    with pytest.raises(ValueError, match=r"model.draft.name: unknown field"):
        parse_inventory({"model": {"path": "big", "draft": {"path": "small", "name": "x"}}, "nodes": nodes},
                        source=tmp_path / "inv.yaml")
