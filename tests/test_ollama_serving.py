"""A model Ollama pulled, served by name through three workers: the bundled model as a Q4_K_M file
holds it (Q4_K and Q6_K ffn_down, Q5_0 / Q8_0 elsewhere: tests/gguf_models.k_quant_demo) is the model
blob of a store built as `ollama pull` leaves one. `cluster up` imports it from the blob in place; the
answers equal mlx-lm in one process on the imported directory, are right, and take the model's own
system prompt and stop strings."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from cluster.inventory import load_inventory
from node.gguf import ollama
from tests.cli_runner import kill_all, leftovers, run_cli
from tests.cluster_harness import write_inventory
from tests.ollama_store import add_model
from tests.reference import reference_text, tokenizer_for

pytestmark = pytest.mark.cluster  # starts worker processes: not in the quick loop

NAME = "smollm2-kq:q4_k_m"
SYSTEM = "You are a concise assistant. Answer in one sentence."
STOPS = ["<|im_start|>", "Rome."]   # the second only so that the default is seen to apply


@pytest.fixture(scope="module")
def served(tmp_path_factory, k_quant_demo_gguf: Path):
    directory = tmp_path_factory.mktemp("ollama-serving")
    store = directory / "ollama" / "models"
    add_model(store, NAME, k_quant_demo_gguf, params={"stop": STOPS, "num_ctx": 2048}, system=SYSTEM)
    inventory_path = write_inventory(directory, nodes=3, name="ollama",
                                     extra={"model": {"ollama": NAME, "ollama_dir": str(store)}})
    home = directory / "home"
    up = run_cli(["up", str(inventory_path), "--detach", "--no-progress"], home, timeout=300)
    try:
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
        imported = home / "models" / f"gguf-{ollama.find(NAME, store).digest[:16]}"
        yield load_inventory(inventory_path), imported
    finally:
        try:
            run_cli(["down", str(inventory_path)], home, timeout=60)
        finally:
            kill_all(leftovers(inventory_path, home))


def _reference(imported: Path, question: str, max_tokens: int) -> str:
    ids = tokenizer_for(imported).encode_chat([{"role": "system", "content": SYSTEM},
                                              {"role": "user", "content": question}])
    return reference_text(imported, ids, max_tokens)


def test_the_import_reads_the_k_quant_blob_in_place(served) -> None:
    _, imported = served
    marker = json.loads((imported / "boltpipe_import.json").read_text())
    assert marker["architecture"] == "llama" and marker["num_layers"] == 30
    config = json.loads((imported / "config.json").read_text())
    # Q4_K repacked as 4-bit groups of 32; Q6_K (no exact MLX form) quantized again to 8 bits.
    assert config["quantization"]["model.layers.0.mlp.down_proj"] == {"group_size": 32, "bits": 4}
    assert config["quantization"]["model.layers.1.mlp.down_proj"]["bits"] == 8
    assert sorted(p.suffix for p in imported.iterdir() if p.is_file() and p.stat().st_size > 10e6) == [".safetensors"]


def test_answers_equal_mlx_lm_with_the_models_system_prompt(served) -> None:
    inventory, imported = served
    client = openai.OpenAI(base_url=f"{inventory.url}/v1", api_key="unused")
    assert [m.id for m in client.models.list().data] == [NAME]
    question = "What is the capital of Germany?"
    reply = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": question}],
                                           max_tokens=16, temperature=0)
    expected = _reference(imported, question, 16)
    assert reply.choices[0].message.content == expected
    assert "Berlin" in expected
    stream = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": question}],
                                            max_tokens=16, temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected
    # The system prompt is the model's default only: a request's own system message wins.
    own = client.chat.completions.create(model=NAME, max_tokens=16, temperature=0,
                                         messages=[{"role": "system", "content": "You are a pirate."},
                                                   {"role": "user", "content": question}])
    ids = tokenizer_for(imported).encode_chat([{"role": "system", "content": "You are a pirate."},
                                              {"role": "user", "content": question}])
    assert own.choices[0].message.content == reference_text(imported, ids, 16)


def test_the_models_stop_strings_apply(served) -> None:
    inventory, imported = served
    client = openai.OpenAI(base_url=f"{inventory.url}/v1", api_key="unused")
    question = "What is the capital of Italy?"
    full = _reference(imported, question, 16)
    assert "Rome." in full
    reply = client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": question}],
                                           max_tokens=16, temperature=0)
    assert reply.choices[0].message.content == full[: full.index("Rome.")]
    assert reply.choices[0].finish_reason == "stop"
