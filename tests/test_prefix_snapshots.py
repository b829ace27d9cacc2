"""Prefixes kept on the stages (node/prefix_snapshots.py), for every supported
family through 3 stages: a session started from a snapshot of another session's first positions
(any prefix for full attention and unwrapped windows; exactly the positions seen for recurrent
states and wrapped windows) goes on with exactly mlx-lm's tokens for its own prompt, a second session
from the same snapshot gets the same tokens again (nothing wrote into it), and the session the
snapshot came from goes on undisturbed."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import pytest

from node.prefix_snapshots import SnapshotError, start_from, take
from tests.stage_chain import CHUNK, StageChain, mlx_lm_greedy
from tests.tiny_models import ALL_TYPES, write_tiny_model

BOUNDS = [0, 2, 4, 6]
NEW_TOKENS = 6


def prompt(length: int, seed: int) -> list[int]:
    return [int(t) for t in mx.random.randint(0, 128, (length,), key=mx.random.key(seed))]


def prefill(chain: StageChain, session: str, ids: list[int], position: int = 0) -> int:
    """Feeds ids from `position` on, all but the last, in chunks; returns the next position."""
    body = ids[position:-1]
    for i in range(0, len(body), CHUNK):
        chain._step(session, position, body[i:i + CHUNK], want_token=False)
        position += len(body[i:i + CHUNK])
    return position


def decode(chain: StageChain, session: str, position: int, token: int, n: int) -> list[int]:
    out = []
    for _ in range(n):
        token = chain._step(session, position, [token], want_token=True)
        position += 1
        out.append(token)
    return out


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_a_session_started_from_a_kept_prefix_gives_mlx_lm_tokens(model_type: str, tmp_path: Path) -> None:
    model_dir = write_tiny_model(tmp_path / model_type, model_type)
    chain = StageChain([model_dir] * 3, BOUNDS)
    first = prompt(12, 1)                     # 12 tokens: past gemma3's 8-token window
    held = prefill(chain, "a", first)         # 11 positions in every stage's cache
    stores = [r.sessions for r in chain.runners]
    kept = 6
    try:
        snapshots = [take(store.own_cache(store._sessions["a"]), held, kept) for store in stores]
    except SnapshotError:                     # exact-only: keep everything it saw
        kept = held
        snapshots = [take(store.own_cache(store._sessions["a"]), held, kept) for store in stores]
    cut = all(s.cut_back for s in snapshots)
    assert cut == (model_type not in ("qwen3_next", "gemma3_text", "gemma3", "gpt_oss")), model_type
    second = first[:kept] + prompt(7, 2)      # shares the kept prefix, then goes its own way
    for name in ("b", "c"):                   # twice from the same snapshot
        for store, snapshot in zip(stores, snapshots):
            store.open_from(name, start_from(snapshot, kept), kept)
        position = prefill(chain, name, second, kept)
        assert decode(chain, name, position, second[-1], NEW_TOKENS) == mlx_lm_greedy(model_dir, second, NEW_TOKENS)
    # The session the prefix came from goes on as if nothing happened.
    assert decode(chain, "a", held, first[-1], NEW_TOKENS) == mlx_lm_greedy(model_dir, first, NEW_TOKENS)
    if cut:
        with pytest.raises(SnapshotError):
            take(stores[0].own_cache(stores[0]._sessions["a"]), held + NEW_TOKENS, held + NEW_TOKENS + 1)
    else:
        with pytest.raises(SnapshotError, match="exactly"):
            start_from(snapshots[0], kept - 1)
