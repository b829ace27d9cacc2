"""Models Ollama pulled, found by name in a store built as `ollama pull` leaves one (tests/ollama_store.py):
the GGUF blob read in place, its stop strings and system prompt, `cluster models`, `cluster import-gguf
ollama:NAME`, an inventory's `model: {ollama: NAME}` imported once, and clear errors for a missing name,
a missing blob and a manifest that holds no GGUF."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gguf
import numpy as np
import pytest

from cluster.inventory import ModelSpec
from cluster.launch.model_source import model_defaults, resolve_model, served_model_name
from node.gguf import GGUFImportError, ollama
from tests.cli_runner import run_cli
from tests.ollama_store import add_model

FIXTURES = Path(__file__).resolve().parent / "data" / "gguf"
SYSTEM = "You are a concise assistant. Answer in one sentence."


def _unknown_arch_gguf(path: Path) -> Path:
    w = gguf.GGUFWriter(str(path), "mamba")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory, smollm2_gguf: Path) -> Path:
    root = tmp_path_factory.mktemp("ollama") / "models"
    add_model(root, "smollm2:135m", smollm2_gguf, params={"stop": ["<|im_start|>", "<|im_end|>"], "temperature": 0.2},
              system=SYSTEM)
    add_model(root, "tiny:q4_k_m", FIXTURES / "tiny-llama-Q4_K_M.gguf")
    add_model(root, "tiny:latest", FIXTURES / "tiny-llama-Q8_0.gguf", namespace="someone")
    add_model(root, "tiny:q8", FIXTURES / "tiny-llama-Q8_0.gguf", host="example.com", namespace="me")
    add_model(root, "mamba:latest", _unknown_arch_gguf(root.parent / "mamba.gguf"))
    add_model(root, "newstyle:8b", None, other_layers=[("tensor", b"safetensors bytes")])
    return root


def test_a_name_resolves_to_its_blob_in_place(store: Path, smollm2_gguf: Path) -> None:
    found = ollama.find("smollm2:135m", store)
    assert found.gguf.parent == store / "blobs" and found.gguf.name.startswith("sha256-")
    assert found.gguf.samefile(smollm2_gguf) or found.gguf.read_bytes()[:4096] == smollm2_gguf.read_bytes()[:4096]
    assert found.stop == ("<|im_start|>", "<|im_end|>") and found.system == SYSTEM
    assert found.params["temperature"] == 0.2 and found.size == smollm2_gguf.stat().st_size
    # Short names take Ollama's defaults: the library namespace, the tag "latest".
    assert ollama.find("someone/tiny", store).gguf.is_file()
    assert ollama.find("example.com/me/tiny:q8", store).gguf.is_file()
    assert ollama.find("registry.ollama.ai/library/tiny:q4_k_m", store).gguf == ollama.find("tiny:q4_k_m", store).gguf


def test_the_store_is_found_where_ollama_keeps_it(store: Path, monkeypatch) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    assert ollama.store_dirs() == [store]
    assert ollama.find("tiny:q4_k_m").gguf.is_file()
    monkeypatch.delenv("OLLAMA_MODELS")
    monkeypatch.setenv("HOME", "/home/someone")
    assert ollama.store_dirs() == [Path("/home/someone/.ollama/models"), Path("/usr/share/ollama/.ollama/models")]


def test_a_missing_name_says_where_it_looked(store: Path) -> None:
    with pytest.raises(GGUFImportError, match=r"no Ollama model 'qwen3:30b-a3b' in .*models; `ollama list`"):
        ollama.find("qwen3:30b-a3b", store)
    with pytest.raises(GGUFImportError, match=r"no Ollama model 'tiny:q8_0'"):
        ollama.find("tiny:q8_0", store)  # the model is there, that tag is not
    with pytest.raises(GGUFImportError, match=r"is not an Ollama model name"):
        ollama.find("../../etc/passwd", store)


def test_a_manifest_without_a_gguf_layer_is_named(store: Path) -> None:
    with pytest.raises(GGUFImportError, match=r"'newstyle:8b' .* holds no GGUF model layer"):
        ollama.find("newstyle:8b", store)


def test_a_missing_blob_says_to_pull_again(tmp_path: Path) -> None:
    root = tmp_path / "models"
    add_model(root, "gone:latest", FIXTURES / "tiny-llama-Q4_0.gguf")
    blob = ollama.find("gone", root).gguf
    blob.unlink()
    with pytest.raises(GGUFImportError, match=r"names the blob sha256-\w+, which is missing .* `ollama pull gone`"):
        ollama.find("gone", root)


def test_cluster_models_lists_the_store_and_what_it_serves(store: Path, tmp_path: Path) -> None:
    result = run_cli(["models", "--ollama-dir", str(store), "--json"], tmp_path / "home", timeout=120)
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert set(rows) == {"smollm2:135m", "tiny:q4_k_m", "someone/tiny:latest", "example.com/me/tiny:q8",
                         "mamba:latest", "newstyle:8b"}
    assert rows["smollm2:135m"]["servable"] == "yes" and rows["smollm2:135m"]["architecture"] == "llama"
    assert "Q4_1 x210" in rows["smollm2:135m"]["tensor_types"]
    assert rows["tiny:q4_k_m"]["servable"] == "yes" and "Q4_K" in rows["tiny:q4_k_m"]["tensor_types"]
    assert rows["mamba:latest"]["servable"].startswith("no: the GGUF importer knows llama")
    assert rows["newstyle:8b"]["servable"] == "no: not a GGUF model (safetensors-based manifest)"
    table = run_cli(["models", "--ollama-dir", str(store)], tmp_path / "home", timeout=120)
    assert table.returncode == 0 and "smollm2:135m" in table.stdout and "boltpipe serves it" in table.stdout


def test_import_gguf_takes_an_ollama_name(store: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    out = tmp_path / "tiny"
    first = run_cli(["import-gguf", "ollama:tiny:q4_k_m", str(out), "--ollama-dir", str(store), "--no-progress"],
                    home, timeout=120)
    assert first.returncode == 0, first.stderr
    assert (out / "config.json").is_file() and "tensors" in first.stdout
    again = run_cli(["import-gguf", "ollama:tiny:q4_k_m", str(out), "--ollama-dir", str(store), "--no-progress"],
                    home, timeout=120)
    assert again.returncode == 0 and "already imported" in again.stdout
    missing = run_cli(["import-gguf", "ollama:nothing", str(tmp_path / "x"), "--ollama-dir", str(store)], home,
                      timeout=120)
    assert missing.returncode != 0 and "no Ollama model 'nothing'" in missing.stderr
    assert not (tmp_path / "x").exists()


def test_an_inventory_model_by_ollama_name_is_imported_once(store: Path) -> None:
    spec = ModelSpec(ollama="smollm2:135m", ollama_dir=store)
    info = resolve_model(spec, progress=False)
    blob = ollama.find("smollm2:135m", store)
    assert info.path.name == f"gguf-{blob.digest[:16]}"
    assert not list(info.path.rglob("*.gguf")) and not list(info.path.rglob("sha256-*"))  # read in place, not copied
    marker = info.path / "boltpipe_import.json"
    stamp = marker.stat().st_mtime_ns, {p.name: p.stat().st_mtime_ns for p in info.path.iterdir()}
    os.utime(blob.gguf, None)  # a touched blob is the same content: its name is its hash
    again = resolve_model(spec, progress=False)
    assert again.path == info.path
    assert (marker.stat().st_mtime_ns, {p.name: p.stat().st_mtime_ns for p in info.path.iterdir()}) == stamp
    assert served_model_name(spec, info) == "smollm2:135m"
    defaults = model_defaults(spec)
    assert defaults.stop == ("<|im_start|>", "<|im_end|>") and defaults.system == SYSTEM
