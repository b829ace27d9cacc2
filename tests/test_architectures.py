"""Every supported family, greedy and in float32, gives mlx-lm's own tokens through 1, 2 and 3
stages cut at every place in a six-layer model (sliding and global layers on both sides of a cut,
cuts inside runs of expert layers, between linear- and full-attention layers), with stages loaded
from whole directories and from per-node shards (experts stacked, or one tensor per expert as
Hugging Face checkpoints hold them). The matrix is printed (pytest -s)."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import pytest

from deploy.shards import cut_shard
from node.architectures import FAMILIES, SUPPORTED_MODEL_TYPES
from node.model_config import ModelDirError, read_model_info
from tests.stage_chain import StageChain, mlx_lm_greedy
from tests.tiny_models import ALL_TYPES, write_tiny_model

LAYERS = 6
NEW_TOKENS = 8
CUTS = [[]] + [[c] for c in range(1, LAYERS)] + [[1, 3], [2, 4], [3, 5], [1, 5], [2, 3]]
MATRIX: dict[str, dict[int, str]] = {}


@pytest.fixture(scope="module", autouse=True)
def print_the_matrix():
    """After the module: the type x stages table of the equality test (pytest -s shows it)."""
    yield
    if MATRIX:
        print("\nmodel type      1 stage  2 stages  3 stages")
        for model_type, row in MATRIX.items():
            print(f"{model_type:<15} {row[1]:<8} {row[2]:<9} {row[3]}")


def _prompt() -> list[int]:
    return [int(t) for t in mx.random.randint(0, 128, (14,), key=mx.random.key(3))]


def test_the_supported_list_is_the_tested_list() -> None:
    assert sorted(ALL_TYPES) == sorted(SUPPORTED_MODEL_TYPES)


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_greedy_tokens_equal_mlx_lm_through_every_cut(model_type: str, tmp_path: Path) -> None:
    model_dir = write_tiny_model(tmp_path / model_type, model_type)
    prompt = _prompt()
    expected = mlx_lm_greedy(model_dir, prompt, NEW_TOKENS)
    outcome: dict[tuple[int, ...], bool] = {}
    for cuts in CUTS:
        bounds = [0, *cuts, LAYERS]
        outcome[tuple(cuts)] = StageChain([model_dir] * (len(bounds) - 1), bounds).greedy(prompt, NEW_TOKENS) == expected
    MATRIX[model_type] = {stages: ("equal" if all(ok for c, ok in outcome.items() if len(c) + 1 == stages)
                                   else "DIFFERENT") for stages in (1, 2, 3)}
    wrong = [cuts for cuts, ok in outcome.items() if not ok]
    assert not wrong, f"{model_type}: tokens differ from mlx-lm at cuts {wrong}"


@pytest.mark.parametrize("model_type, hf_layout", [("qwen3_moe", True), ("qwen3_next", True), ("deepseek_v3", False),
                                                   ("gpt_oss", False), ("gemma2", False), ("mistral3", False)])
def test_stages_from_shards_equal_mlx_lm(model_type: str, hf_layout: bool, tmp_path: Path) -> None:
    """Each node's shard holds only its layers' tensors, under the checkpoint's own names (per-expert
    tensors are stacked by mlx-lm's sanitize when the worker loads them)."""
    model_dir = write_tiny_model(tmp_path / "model", model_type, hf_layout=hf_layout)
    bounds = [0, 2, 5, LAYERS]
    shards = []
    for start, end in zip(bounds, bounds[1:]):
        cut_shard(model_dir, start, end, tmp_path / f"{start}-{end}")
        shards.append(tmp_path / f"{start}-{end}")
    names = {n for n in mx.load(str(shards[1] / "model.safetensors"))}
    assert names and all(".layers.2." in n or ".layers.3." in n or ".layers.4." in n for n in names), names
    if hf_layout:
        assert any(".mlp.experts.7." in n for n in names), "one tensor per expert, as the checkpoint holds them"
    prompt = _prompt()
    assert StageChain(shards, bounds).greedy(prompt, NEW_TOKENS) == mlx_lm_greedy(model_dir, prompt, NEW_TOKENS)


def test_an_unsupported_type_names_the_nearest_family(tmp_path: Path) -> None:
    model_dir = write_tiny_model(tmp_path / "m", "llama")
    config = (model_dir / "config.json").read_text().replace('"model_type": "llama"', '"model_type": "qwen2_moe"')
    (model_dir / "config.json").write_text(config)
    with pytest.raises(ModelDirError, match=r"model_type 'qwen2_moe' is not served: mlx-lm has a model class for "
                                            r"it, but .*the nearest supported family is 'qwen3_moe'"):
        read_model_info(model_dir)
    (model_dir / "config.json").write_text(config.replace("qwen2_moe", "brand_new_arch"))
    with pytest.raises(ModelDirError, match=r"'brand_new_arch' is not served: mlx-lm has no model class for it"):
        read_model_info(model_dir)


def test_every_family_has_a_readme_row() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [t for t in FAMILIES if f"| `{t}` |" not in readme]
    assert not missing, f"README's supported-models table lacks {missing}"
