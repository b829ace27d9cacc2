"""read_model_sizes: per-part byte counts from safetensors headers, without reading weights."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from node.model_sizes import MAX_HEADER_BYTES, ModelSizeError, ModelSizes, read_model_sizes


def write_config(model_dir: Path, num_layers: int) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": num_layers}))


def small_model(num_layers: int, *, tied: bool, quantized: bool = False) -> dict[str, np.ndarray]:
    """Layer i's tensors total 100 * (i + 1) bytes (float16 = 2 bytes each), so every layer differs."""
    t: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": np.zeros((16, 8), np.float16),  # 256 B
        "model.norm.weight": np.zeros(8, np.float32),  # 32 B
    }
    if quantized:
        t["model.embed_tokens.scales"] = np.zeros((16, 2), np.float16)  # 64 B
        t["model.embed_tokens.biases"] = np.zeros((16, 2), np.float16)  # 64 B
    if not tied:
        t["lm_head.weight"] = np.zeros((16, 8), np.uint32)  # 512 B
    for i in range(num_layers):
        t[f"model.layers.{i}.self_attn.q_proj.weight"] = np.zeros(30 * (i + 1), np.float16)
        t[f"model.layers.{i}.input_layernorm.weight"] = np.zeros(20 * (i + 1), np.float16)
    return t


def layer_bytes(i: int) -> int:
    return 100 * (i + 1)


def test_single_file_untied(tmp_path: Path) -> None:
    write_config(tmp_path, 4)
    save_file(small_model(4, tied=False), str(tmp_path / "model.safetensors"), metadata={"format": "mlx"})
    sizes = read_model_sizes(tmp_path)
    assert sizes == ModelSizes(layer_bytes=(100, 200, 300, 400), embedding_bytes=256, norm_bytes=32,
                               head_bytes=512, other_bytes=0, tied=False)
    assert sizes.total_bytes == 1000 + 256 + 32 + 512


def test_tied_quantized_embedding_counts_scales_and_biases(tmp_path: Path) -> None:
    write_config(tmp_path, 3)
    save_file(small_model(3, tied=True, quantized=True), str(tmp_path / "model.safetensors"))
    sizes = read_model_sizes(tmp_path)
    assert sizes.tied and sizes.head_bytes == 0
    assert sizes.embedding_bytes == 256 + 64 + 64
    assert sizes.layer_bytes == (100, 200, 300)


def test_other_tensors_are_counted_apart(tmp_path: Path) -> None:
    write_config(tmp_path, 1)
    tensors = small_model(1, tied=True) | {"model.rotary_emb.inv_freq": np.zeros(4, np.float32)}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    sizes = read_model_sizes(tmp_path)
    assert sizes.other_bytes == 16
    assert sizes.total_bytes == 100 + 256 + 32 + 16


def test_sharded_directory_without_index(tmp_path: Path) -> None:
    write_config(tmp_path, 5)
    tensors = small_model(5, tied=False)
    names = sorted(tensors)
    save_file({k: tensors[k] for k in names[::2]}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({k: tensors[k] for k in names[1::2]}, str(tmp_path / "model-00002-of-00002.safetensors"))
    sizes = read_model_sizes(tmp_path)
    assert sizes.layer_bytes == tuple(layer_bytes(i) for i in range(5))
    assert (sizes.embedding_bytes, sizes.norm_bytes, sizes.head_bytes) == (256, 32, 512)


def test_sharded_directory_with_index_uses_only_indexed_files(tmp_path: Path) -> None:
    write_config(tmp_path, 2)
    tensors = small_model(2, tied=True)
    first = {k: v for k, v in tensors.items() if "layers.1." not in k}
    second = {k: v for k, v in tensors.items() if "layers.1." in k}
    save_file(first, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file(second, str(tmp_path / "model-00002-of-00002.safetensors"))
    save_file({"model.layers.0.stray": np.zeros(1000, np.uint8)}, str(tmp_path / "model-old.safetensors"))
    weight_map = {k: "model-00001-of-00002.safetensors" for k in first} | {k: "model-00002-of-00002.safetensors" for k in second}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert read_model_sizes(tmp_path).layer_bytes == (100, 200)


def test_index_naming_a_missing_file(tmp_path: Path) -> None:
    write_config(tmp_path, 1)
    save_file(small_model(1, tied=True), str(tmp_path / "model-00001-of-00002.safetensors"))
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ModelSizeError, match="model-00002-of-00002.safetensors"):
        read_model_sizes(tmp_path)


def test_mlx_written_file(tmp_path: Path) -> None:
    mx = pytest.importorskip("mlx.core")
    write_config(tmp_path, 2)
    mx.save_safetensors(str(tmp_path / "model.safetensors"), {
        "model.embed_tokens.weight": mx.zeros((10, 4), dtype=mx.bfloat16),
        "model.layers.0.mlp.weight": mx.zeros((4, 4), dtype=mx.float32),
        "model.layers.1.mlp.weight": mx.zeros((4, 2), dtype=mx.uint32),
        "model.norm.weight": mx.zeros((4,), dtype=mx.float16),
    })
    sizes = read_model_sizes(tmp_path)
    assert sizes.layer_bytes == (64, 32)
    assert (sizes.embedding_bytes, sizes.norm_bytes, sizes.tied) == (80, 8, True)


class TestStageBytes:
    untied = ModelSizes(layer_bytes=(10, 20, 30, 40), embedding_bytes=1000, norm_bytes=5, head_bytes=2000,
                        other_bytes=7, tied=False)
    tied = ModelSizes(layer_bytes=(10, 20, 30, 40), embedding_bytes=1000, norm_bytes=5, head_bytes=0,
                      other_bytes=0, tied=True)

    def test_untied(self) -> None:
        s = self.untied
        assert s.stage_bytes(0, 2, first=True, last=False) == 30 + 1000
        assert s.stage_bytes(1, 3, first=False, last=False) == 50
        assert s.stage_bytes(2, 4, first=False, last=True) == 70 + 5 + 2000
        assert s.stage_bytes(0, 4, first=True, last=True) == 100 + 1000 + 5 + 2000

    def test_tied_last_stage_holds_the_embedding(self) -> None:
        s = self.tied
        assert s.stage_bytes(0, 2, first=True, last=False) == 30 + 1000
        assert s.stage_bytes(2, 4, first=False, last=True) == 70 + 5 + 1000
        assert s.stage_bytes(0, 4, first=True, last=True) == 100 + 1000 + 5, "a single stage holds it once"

    def test_out_of_range(self) -> None:
        with pytest.raises(ValueError):
            self.tied.stage_bytes(2, 5, first=False, last=True)


class TestErrors:
    def test_missing_dir(self, tmp_path: Path) -> None:
        with pytest.raises(ModelSizeError, match="does not exist"):
            read_model_sizes(tmp_path / "nope")

    def test_no_weight_files(self, tmp_path: Path) -> None:
        write_config(tmp_path, 2)
        with pytest.raises(ModelSizeError, match="no model\\*.safetensors"):
            read_model_sizes(tmp_path)

    def test_too_short_for_a_header(self, tmp_path: Path) -> None:
        (tmp_path / "model.safetensors").write_bytes(b"\x01\x02")
        with pytest.raises(ModelSizeError, match="model.safetensors: truncated"):
            read_model_sizes(tmp_path)

    def test_header_cut_short(self, tmp_path: Path) -> None:
        (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", 500) + b'{"a": ')
        with pytest.raises(ModelSizeError, match="header says 500 bytes but only 6 follow"):
            read_model_sizes(tmp_path)

    def test_implausible_header_length(self, tmp_path: Path) -> None:
        (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}")
        with pytest.raises(ModelSizeError, match="implausible"):
            read_model_sizes(tmp_path)

    def test_header_not_json(self, tmp_path: Path) -> None:
        (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", 4) + b"\xff{{{")
        with pytest.raises(ModelSizeError, match="not valid JSON"):
            read_model_sizes(tmp_path)

    def test_bad_offsets(self, tmp_path: Path) -> None:
        blob = json.dumps({"model.layers.0.w": {"dtype": "F16", "shape": [2], "data_offsets": [4, 0]}}).encode()
        (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + b"\0" * 4)
        with pytest.raises(ModelSizeError, match="'model.layers.0.w' has no valid data_offsets"):
            read_model_sizes(tmp_path)

    def test_data_cut_short(self, tmp_path: Path) -> None:
        save_file(small_model(2, tied=True), str(tmp_path / "model.safetensors"))
        data = (tmp_path / "model.safetensors").read_bytes()
        (tmp_path / "model.safetensors").write_bytes(data[:-50])
        with pytest.raises(ModelSizeError, match="model.safetensors: truncated: tensor"):
            read_model_sizes(tmp_path)

    def test_missing_layers_against_config(self, tmp_path: Path) -> None:
        write_config(tmp_path, 6)
        tensors = {k: v for k, v in small_model(6, tied=True).items() if not any(f"layers.{i}." in k for i in (2, 3, 5))}
        save_file(tensors, str(tmp_path / "model.safetensors"))
        with pytest.raises(ModelSizeError, match=r"no tensors for layer\(s\) 2-3, 5"):
            read_model_sizes(tmp_path)

    def test_more_layers_than_declared(self, tmp_path: Path) -> None:
        save_file(small_model(4, tied=True), str(tmp_path / "model.safetensors"))
        with pytest.raises(ModelSizeError, match=r"layer\(s\) 3 beyond the 3"):
            read_model_sizes(tmp_path, num_layers=3)

    def test_without_config_the_layers_found_count(self, tmp_path: Path) -> None:
        save_file(small_model(4, tied=True), str(tmp_path / "model.safetensors"))
        assert read_model_sizes(tmp_path).num_layers == 4

    def test_duplicate_tensor_across_shards(self, tmp_path: Path) -> None:
        tensors = small_model(1, tied=True)
        save_file(tensors, str(tmp_path / "model-00001-of-00002.safetensors"))
        save_file(tensors, str(tmp_path / "model-00002-of-00002.safetensors"))
        with pytest.raises(ModelSizeError, match="appears in both"):
            read_model_sizes(tmp_path)


def test_bundled_smollm2(smollm2_dir: Path) -> None:
    """The imported SmolLM2-135M: 30 equal quantized layers, tied embeddings; the header sums
    agree with the files on disk and with the tensors MLX actually loads."""
    mx = pytest.importorskip("mlx.core")
    sizes = read_model_sizes(smollm2_dir)
    assert sizes.num_layers == 30
    assert len(set(sizes.layer_bytes)) == 1, "every layer of this model has the same shape"
    assert sizes.tied and sizes.head_bytes == 0
    assert sizes.embedding_bytes > 0 and sizes.norm_bytes > 0

    files = sorted(smollm2_dir.glob("model*.safetensors"))
    loaded: dict[str, int] = {}
    for f in files:
        loaded.update({name: int(a.nbytes) for name, a in mx.load(str(f)).items()})
    assert sizes.total_bytes == sum(loaded.values())
    assert sizes.layer_bytes[7] == sum(v for k, v in loaded.items() if k.startswith("model.layers.7."))
    assert sizes.embedding_bytes == sum(v for k, v in loaded.items() if k.startswith("model.embed_tokens."))
    assert sizes.stage_bytes(0, 30, first=True, last=True) + sizes.other_bytes == sizes.total_bytes

    on_disk = sum(f.stat().st_size for f in files)
    headers = 0
    for f in files:
        with f.open("rb") as fh:
            headers += 8 + struct.unpack("<Q", fh.read(8))[0]
    assert on_disk - headers == sizes.total_bytes
    assert headers < 1_000_000
