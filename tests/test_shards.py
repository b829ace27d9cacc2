"""Per-node shards: the right tensors, the source's bytes, deterministic, atomic; and a worker
loading a shard holds and computes exactly what it does from the full model directory."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from deploy.stage_tensors import TOKENIZER_FILES
from deploy.shards import (ShardError, cut_shard, ensure_shard, file_sha256, read_manifest, shard_cache_dir,
                            stage_tensor_names, verify_shard)
from deploy.stage_tensors import files_for_stage
from node.model_config import SHARD_MANIFEST, ModelDirError, read_model_info
from node.stage_model import LayerRange, load_stage
from tests.model_factory import model_bytes, write_random_llama

LAYERS = 6
SPLIT = [(0, 2), (2, 4), (4, 6)]
HIDDEN = 64
EMBED, NORM, HEAD = "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"


def _small_llama(out: Path) -> Path:
    write_random_llama(out, hidden_size=HIDDEN, num_layers=LAYERS, intermediate_size=128, num_heads=4,
                       num_kv_heads=2, vocab_size=256, layers_per_shard=2)
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": 2}))
    (out / "tokenizer.json").write_text("{}")  # present in real models; only the last stage reads it
    return out


def _tie(model_dir: Path) -> Path:
    """The factory writes an untied Llama; drop its head and declare the embedding tied."""
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}, indent=2))
    index = json.loads((model_dir / "model.safetensors.index.json").read_text())
    head_file = model_dir / index["weight_map"].pop(HEAD)
    tensors = mx.load(str(head_file))
    del tensors[HEAD]
    mx.save_safetensors(str(head_file), tensors, metadata={"format": "mlx"})
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return model_dir


@pytest.fixture(scope="module", params=["untied", "tied"])
def model(request, tmp_path_factory) -> Path:
    out = _small_llama(tmp_path_factory.mktemp(request.param) / "llama")
    return _tie(out) if request.param == "tied" else out


@pytest.fixture(scope="module")
def untied(tmp_path_factory) -> Path:
    return _small_llama(tmp_path_factory.mktemp("plain") / "llama")


@pytest.fixture(scope="module")
def shards(model, tmp_path_factory) -> dict[tuple[int, int], Path]:
    root = tmp_path_factory.mktemp("shards")
    out = {}
    for start, end in SPLIT:
        cut_shard(model, start, end, root / f"{start}-{end}")
        out[(start, end)] = root / f"{start}-{end}"
    return out


def _source_tensors(model_dir: Path) -> dict[str, mx.array]:
    tensors: dict[str, mx.array] = {}
    for path in sorted(model_dir.glob("model*.safetensors")):
        tensors.update(mx.load(str(path)))
    return tensors


def _expected_names(source: dict, start: int, end: int, tied: bool) -> set[str]:
    names = {n for n in source if n.startswith("model.layers.") and start <= int(n.split(".")[2]) < end}
    if start == 0 or (end == LAYERS and tied):
        names.add(EMBED)
    if end == LAYERS:
        names |= {NORM} if tied else {NORM, HEAD}
    return names


class TestStageTensorNames:
    NAMES = [EMBED, NORM, HEAD, "model.rotary_emb.inv_freq"] + [
        f"model.layers.{i}.{p}" for i in range(12) for p in ("self_attn.q_proj.weight", "mlp.up_proj.weight")
    ]

    def layers(self, *indices: int) -> set[str]:
        return {n for n in self.NAMES if n.startswith("model.layers.") and int(n.split(".")[2]) in indices}

    @pytest.mark.parametrize("tied", [False, True])
    def test_first_stage_embeds(self, tied: bool) -> None:
        got = stage_tensor_names(self.NAMES, 0, 2, 12, tied)
        assert set(got) == self.layers(0, 1) | {EMBED, "model.rotary_emb.inv_freq"}
        assert got == sorted(got)

    @pytest.mark.parametrize("tied", [False, True])
    def test_middle_stage_has_only_its_layers(self, tied: bool) -> None:
        # Layer 1 must not pull in layers 10 and 11 by prefix.
        assert set(stage_tensor_names(self.NAMES, 1, 3, 12, tied)) == self.layers(1, 2) | {"model.rotary_emb.inv_freq"}

    def test_last_stage_untied(self) -> None:
        got = set(stage_tensor_names(self.NAMES, 9, 12, 12, tied=False))
        assert got == self.layers(9, 10, 11) | {NORM, HEAD, "model.rotary_emb.inv_freq"}

    def test_last_stage_tied_keeps_the_embedding(self) -> None:
        got = set(stage_tensor_names(self.NAMES, 9, 12, 12, tied=True))
        assert got == self.layers(9, 10, 11) | {EMBED, NORM, HEAD, "model.rotary_emb.inv_freq"}

    @pytest.mark.parametrize("tied", [False, True])
    def test_only_stage_takes_everything(self, tied: bool) -> None:
        assert stage_tensor_names(self.NAMES, 0, 12, 12, tied) == sorted(self.NAMES)

    @pytest.mark.parametrize("start, end", [(2, 2), (3, 1), (-1, 2), (0, 13)])
    def test_bad_range(self, start: int, end: int) -> None:
        with pytest.raises(ValueError, match="not within the model's 12 layers"):
            stage_tensor_names(self.NAMES, start, end, 12, False)

    def test_layer_beyond_the_model(self) -> None:
        with pytest.raises(ValueError, match=r"belongs to layer \d+, beyond the model's 8 layers; is num_layers right"):
            stage_tensor_names(self.NAMES, 0, 2, 8, False)


class TestCutShard:
    def test_each_shard_has_exactly_its_tensors_with_the_source_bytes(self, model, shards) -> None:
        tied = read_model_info(model).tie_word_embeddings
        source = _source_tensors(model)
        covered: set[str] = set()
        for (start, end), shard in shards.items():
            got, metadata = mx.load(str(shard / "model.safetensors"), return_metadata=True)
            assert set(got) == _expected_names(source, start, end, tied), f"shard {start}-{end}"
            assert metadata == {"format": "mlx"}
            for name, value in got.items():
                assert value.dtype == source[name].dtype and mx.array_equal(value, source[name]).item(), name
            covered |= set(got)
        assert covered == set(source)

    def test_small_files_come_along_and_the_tokenizer_only_to_the_last_stage(self, model, shards) -> None:
        for (_, end), shard in shards.items():
            assert (shard / "config.json").read_bytes() == (model / "config.json").read_bytes()
            assert (shard / "generation_config.json").read_bytes() == (model / "generation_config.json").read_bytes()
            # The last stage follows grammars with the tokenizer (node/grammar.py); the others never tokenize.
            tokenizer = [n for n in TOKENIZER_FILES if (model / n).is_file()] if end == LAYERS else []
            assert sorted(p.name for p in shard.iterdir()) == sorted(
                ["config.json", "generation_config.json", "model.safetensors", SHARD_MANIFEST, *tokenizer])

    def test_manifest_is_true(self, shards) -> None:
        for (start, end), shard in shards.items():
            manifest = read_manifest(shard)
            assert (manifest.layer_start, manifest.layer_end, manifest.num_layers) == (start, end, LAYERS)
            assert set(manifest.files) == {p.name for p in shard.iterdir()} - {SHARD_MANIFEST}
            for name, digest in manifest.files.items():
                assert digest.sha256 == file_sha256(shard / name)
                assert digest.size == (shard / name).stat().st_size
            assert verify_shard(shard, hashes=True) == []
            assert json.loads((shard / SHARD_MANIFEST).read_text()) == manifest.to_dict()

    def test_cutting_twice_gives_the_same_bytes(self, model, shards, tmp_path) -> None:
        again = cut_shard(model, 2, 4, tmp_path / "again")
        assert file_sha256(tmp_path / "again" / "model.safetensors") == file_sha256(
            shards[(2, 4)] / "model.safetensors")
        assert (tmp_path / "again" / SHARD_MANIFEST).read_bytes() == (shards[(2, 4)] / SHARD_MANIFEST).read_bytes()
        assert again == read_manifest(shards[(2, 4)])

    def test_a_middle_shard_is_much_smaller_than_the_model(self, model, shards) -> None:
        assert (shards[(2, 4)] / "model.safetensors").stat().st_size < 0.4 * model_bytes(model)

    def test_progress_reaches_the_total(self, untied, tmp_path) -> None:
        calls: list[tuple[int, int]] = []
        cut_shard(untied, 0, 2, tmp_path / "s", progress=lambda done, total: calls.append((done, total)))
        dones = [d for d, _ in calls]
        assert dones == sorted(dones) and calls[0][0] == 0
        assert calls[-1][0] == calls[-1][1] > 0

    def test_a_failed_cut_leaves_nothing_behind_and_keeps_the_previous_shard(self, untied, tmp_path) -> None:
        def fail_halfway(done: int, total: int) -> None:
            if done > total // 2:
                raise RuntimeError("interrupted")

        with pytest.raises(RuntimeError):
            cut_shard(untied, 0, 2, tmp_path / "s", progress=fail_halfway)
        assert list(tmp_path.iterdir()) == []
        cut_shard(untied, 0, 2, tmp_path / "s")
        before = file_sha256(tmp_path / "s" / "model.safetensors")
        with pytest.raises(RuntimeError):
            cut_shard(untied, 2, 4, tmp_path / "s", progress=fail_halfway)
        assert [p.name for p in tmp_path.iterdir()] == ["s"]
        assert read_manifest(tmp_path / "s").layer_start == 0
        assert file_sha256(tmp_path / "s" / "model.safetensors") == before

    def test_recutting_replaces_a_shard(self, untied, tmp_path) -> None:
        cut_shard(untied, 0, 2, tmp_path / "s")
        cut_shard(untied, 4, 6, tmp_path / "s")
        assert read_manifest(tmp_path / "s").layer_start == 4
        assert [p.name for p in tmp_path.iterdir()] == ["s"]

    def test_refuses_to_overwrite_what_is_not_a_shard(self, untied, tmp_path) -> None:
        (tmp_path / "precious").mkdir()
        (tmp_path / "precious" / "notes.txt").write_text("keep me")
        with pytest.raises(ShardError, match="not a shard"):
            cut_shard(untied, 0, 2, tmp_path / "precious")
        with pytest.raises(ShardError, match="must differ"):
            cut_shard(untied, 0, 2, untied)
        assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"

    def test_range_outside_the_model(self, untied, tmp_path) -> None:
        with pytest.raises(ShardError, match=r"\[4, 7\) is not within .* 6 layers"):
            cut_shard(untied, 4, 7, tmp_path / "s")

    def test_a_shard_cannot_give_layers_it_lacks(self, shards, tmp_path) -> None:
        with pytest.raises(ShardError, match="lacks tensors .*layer 1"):
            cut_shard(shards[(2, 4)], 1, 3, tmp_path / "s")

    def test_from_only_the_files_the_index_names(self, untied, tmp_path) -> None:
        """A partial download (deploy/hf_fetch.py) is enough to cut its stage's shard."""
        index = json.loads((untied / "model.safetensors.index.json").read_text())
        partial = tmp_path / "partial"
        partial.mkdir()
        for name in ["config.json", "model.safetensors.index.json", *files_for_stage(index, 2, 4, LAYERS)]:
            shutil.copy(untied / name, partial / name)
        assert len(list(partial.glob("*.safetensors"))) == 1
        cut_shard(partial, 2, 4, tmp_path / "from-partial")
        cut_shard(untied, 2, 4, tmp_path / "from-full")
        assert file_sha256(tmp_path / "from-partial" / "model.safetensors") == file_sha256(
            tmp_path / "from-full" / "model.safetensors")
        with pytest.raises(ShardError, match="files missing from .*model-00001-of-00004.safetensors"):
            cut_shard(partial, 0, 2, tmp_path / "first")


class TestEnsureShard:
    def test_cuts_once_then_reuses_and_recuts_when_damaged(self, untied, tmp_path, monkeypatch) -> None:
        monkeypatch.setenv("BOLTPIPE_HOME", str(tmp_path / "home"))
        where = shard_cache_dir(untied, 2, 4)
        assert where.parent.parent == tmp_path / "home" / "shards" and where.name == "2-4"
        assert ensure_shard(untied, 2, 4) == where
        weights = where / "model.safetensors"
        first = weights.stat().st_mtime_ns
        assert ensure_shard(untied, 2, 4) == where and weights.stat().st_mtime_ns == first, "reused, not cut again"
        with open(weights, "r+b") as fh:
            fh.truncate(weights.stat().st_size - 10)
        assert verify_shard(where)
        ensure_shard(untied, 2, 4)
        assert verify_shard(where, hashes=True) == []

    def test_the_cache_key_follows_the_weights(self, untied, tmp_path) -> None:
        copy = shutil.copytree(untied, tmp_path / "copy")
        before = shard_cache_dir(copy, 0, 2)
        weights = next(copy.glob("model-*.safetensors"))
        os.utime(weights, ns=(0, 0))
        assert shard_cache_dir(copy, 0, 2) != before


class TestLoadFromShard:
    @pytest.mark.parametrize("start, end", SPLIT)
    def test_same_weights_and_output_as_the_full_directory(self, model, shards, start, end) -> None:
        layers = LayerRange(start, end)
        full, part = load_stage(model, layers), load_stage(shards[(start, end)], layers)
        full_params, part_params = tree_flatten(full.parameters()), tree_flatten(part.parameters())
        assert [n for n, _ in part_params] == [n for n, _ in full_params]
        for (name, a), (_, b) in zip(full_params, part_params):
            assert mx.array_equal(a, b).item(), name
        mx.random.seed(1)
        if full.is_first:
            tokens = mx.array([[1, 5, 9, 200, 3]])
            x_full, x_part = full.embed(tokens), part.embed(tokens)
        else:
            x_full = x_part = mx.random.normal((1, 5, HIDDEN))
        y_full = full.run_layers(x_full, full.make_cache(), 0)
        y_part = part.run_layers(x_part, part.make_cache(), 0)
        if full.is_last:
            y_full, y_part = full.head(y_full), part.head(y_part)
        assert mx.array_equal(y_full, y_part).item()

    def test_a_range_inside_the_shard(self, untied, tmp_path) -> None:
        cut_shard(untied, 2, 6, tmp_path / "s")
        info = read_model_info(tmp_path / "s")
        assert info.shard_layers == (2, 6) and info.num_layers == LAYERS
        stage = load_stage(tmp_path / "s", LayerRange(3, 5))
        full = load_stage(untied, LayerRange(3, 5))
        for (name, a), (_, b) in zip(tree_flatten(full.parameters()), tree_flatten(stage.parameters())):
            assert mx.array_equal(a, b).item(), name

    def test_a_range_outside_the_shard_is_refused(self, shards) -> None:
        with pytest.raises(ModelDirError, match=r"holding layers \[2, 4\) of 6.*requested layers \[1, 3\)"):
            load_stage(shards[(2, 4)], LayerRange(1, 3))

    def test_a_missing_tensor_is_named(self, shards, tmp_path) -> None:
        damaged = shutil.copytree(shards[(2, 4)], tmp_path / "damaged")
        tensors = mx.load(str(damaged / "model.safetensors"))
        del tensors["model.layers.3.mlp.down_proj.weight"]
        mx.save_safetensors(str(damaged / "model.safetensors"), tensors, metadata={"format": "mlx"})
        with pytest.raises(ModelDirError, match=r"lacks 1 tensor\(s\).*model\.layers\.3\.mlp\.down_proj\.weight"):
            load_stage(damaged, LayerRange(2, 4))

    def test_a_partial_download_loads_its_layers(self, untied, tmp_path) -> None:
        """What deploy/hf_fetch.py leaves: config, index and only the stage's weight files."""
        index = json.loads((untied / "model.safetensors.index.json").read_text())
        partial = tmp_path / "partial"
        partial.mkdir()
        for name in ["config.json", "model.safetensors.index.json", *files_for_stage(index, 2, 4, LAYERS)]:
            shutil.copy(untied / name, partial / name)
        full, part = load_stage(untied, LayerRange(2, 4)), load_stage(partial, LayerRange(2, 4))
        for (name, a), (_, b) in zip(tree_flatten(full.parameters()), tree_flatten(part.parameters())):
            assert mx.array_equal(a, b).item(), name
        with pytest.raises(ModelDirError, match=r"partial model directory .* lacks .*model\.layers\.4\..*download"):
            load_stage(partial, LayerRange(3, 5))

    def test_a_manifest_from_another_model_is_refused(self, shards, tmp_path) -> None:
        odd = shutil.copytree(shards[(2, 4)], tmp_path / "odd")
        manifest = json.loads((odd / SHARD_MANIFEST).read_text())
        (odd / SHARD_MANIFEST).write_text(json.dumps({**manifest, "num_layers": 32}))
        with pytest.raises(ModelDirError, match="model of 32 layers but config.json declares 6"):
            read_model_info(odd)


def test_quantized_tied_model_shards_load_the_same_weights(smollm2_dir, tmp_path) -> None:
    """The imported SmolLM2 (4-bit layers, 8-bit tied embedding): mlx-lm quantizes a shard's
    layers from the scales it finds, and every kept weight equals the full directory's."""
    for start, end in [(0, 10), (10, 20), (20, 30)]:
        cut_shard(smollm2_dir, start, end, tmp_path / f"{start}")
        layers = LayerRange(start, end)
        full, part = load_stage(smollm2_dir, layers), load_stage(tmp_path / f"{start}", layers)
        full_params, part_params = tree_flatten(full.parameters()), tree_flatten(part.parameters())
        assert [n for n, _ in part_params] == [n for n, _ in full_params]
        assert any(n.endswith(".scales") for n, _ in part_params)
        for (name, a), (_, b) in zip(full_params, part_params):
            assert mx.array_equal(a, b).item(), name
    middle = (tmp_path / "10" / "model.safetensors").stat().st_size
    assert middle < 0.5 * (smollm2_dir / "model.safetensors").stat().st_size
