"""files_for_stage: from a Hugging Face weight index, only the files holding one stage's tensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.hf_fetch import main as hf_fetch_main
from deploy.stage_tensors import SMALL_FILES, files_for_stage
from tests.model_factory import write_random_llama

F1, F2, F3, F4 = (f"model-0000{i}-of-00004.safetensors" for i in range(1, 5))
LAYER_TENSORS = ("input_layernorm.weight", "mlp.down_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight",
                 "post_attention_layernorm.weight", "self_attn.k_proj.weight", "self_attn.o_proj.weight",
                 "self_attn.q_proj.weight", "self_attn.v_proj.weight")
# Where a layer straddles two files (as in Llama-3-8B's index): its attention in the first, MLP in the next.
SPLIT_LAYERS = {8: (F1, F2), 20: (F2, F3), 31: (F3, F4)}


def llama8b_index(tied: bool) -> dict:
    """The shape of a 32-layer, 4-file 8B index: embedding first, norm and head in the last file."""
    weight_map = {"model.embed_tokens.weight": F1, "model.norm.weight": F4}
    if not tied:
        weight_map["lm_head.weight"] = F4
    for i in range(32):
        for t in LAYER_TENSORS:
            if i in SPLIT_LAYERS:
                weight_map[f"model.layers.{i}.{t}"] = SPLIT_LAYERS[i][0 if t.startswith("self_attn") else 1]
            else:
                weight_map[f"model.layers.{i}.{t}"] = F1 if i < 8 else F2 if i < 20 else F3
    return {"metadata": {"total_size": 16060522496}, "weight_map": weight_map}


@pytest.fixture(params=[False, True], ids=["untied", "tied"])
def index(request, tmp_path: Path) -> tuple[dict, bool]:
    path = tmp_path / "model.safetensors.index.json"
    path.write_text(json.dumps(llama8b_index(request.param), indent=2))
    return json.loads(path.read_text()), request.param


@pytest.mark.parametrize("start, end, files", [
    (0, 8, [F1]),
    (0, 9, [F1, F2]),       # layer 8 straddles files 1 and 2
    (8, 16, [F1, F2]),
    (9, 20, [F2]),
    (9, 21, [F2, F3]),
    (21, 31, [F3]),
])
def test_first_and_middle_stages(index, start, end, files) -> None:
    idx, tied = index
    assert files_for_stage(idx, start, end, 32) == files


def test_last_stage_untied_reads_the_head_file(index) -> None:
    idx, tied = index
    expected = [F1, F3, F4] if tied else [F3, F4]  # tied: the head is the embedding, in file 1
    assert files_for_stage(idx, 24, 32, 32) == expected


def test_a_single_stage_needs_every_file(index) -> None:
    idx, tied = index
    assert files_for_stage(idx, 0, 32, 32) == [F1, F2, F3, F4]


def test_no_index_means_the_single_file() -> None:
    assert files_for_stage(None, 3, 5, 8) == ["model.safetensors"]


def test_bad_range() -> None:
    with pytest.raises(ValueError, match="not within the model's 32 layers"):
        files_for_stage(llama8b_index(False), 30, 33, 32)


def test_small_files_leave_out_the_tokenizer() -> None:
    assert SMALL_FILES == ("config.json", "generation_config.json")


def test_against_a_real_model_directory(tmp_path) -> None:
    model = write_random_llama(tmp_path / "m", hidden_size=32, num_layers=6, intermediate_size=64, vocab_size=128,
                               layers_per_shard=2)
    index = json.loads((model / "model.safetensors.index.json").read_text())
    # The factory writes embedding, norm and head to file 1, then layers two per file.
    assert files_for_stage(index, 0, 2, 6) == [F1, F2]
    assert files_for_stage(index, 2, 4, 6) == [F3]
    assert files_for_stage(index, 3, 6, 6) == [F1, F3, F4]


def test_fetch_refuses_a_bad_range_before_any_download(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        hf_fetch_main(["--repo", "x/y", "--dest", str(tmp_path), "--layers", "3", "2", "--num-layers", "4"])
    assert exc.value.code == 2
    assert "--layers 3 2 is not a range within --num-layers 4" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
