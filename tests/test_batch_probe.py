"""The batch probe (cluster/bench/batch_probe.py) runs and reports consistent figures, and names the
BLAS library that answers MLX's calls. No speed is asserted: it is a measurement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cluster.bench.batch_probe import probe
from node.blas import library_at
from tests.tiny_models import write_tiny_model

REPO = Path(__file__).resolve().parent.parent

MAPS = """\
7f0000000000-7f0000100000 r-xp 00000000 08:01 123 /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so
7f0000100000-7f0000200000 rw-p 00000000 00:00 0
"""


def test_the_library_at_an_address_is_read_from_the_maps() -> None:
    assert library_at(0x7F0000000010, MAPS).endswith("libopenblasp-r0.3.21.so")
    assert library_at(0x7F0000100010, MAPS) == "(anonymous)"
    assert library_at(0x10, MAPS) is None


def test_probe_reports_every_batch_against_batch_one(tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "m", "qwen3")
    report = probe(tmp_path / "m", [1, 2, 4], float32=True)
    assert [r["batch"] for r in report["rows"]] == [1, 2, 4]
    assert report["rows"][0]["speedup_vs_batch_1"] == 1.0
    for row in report["rows"]:
        assert row["step_ms"] > 0
        assert row["tokens_per_s"] == row["batch"] * 1000 / row["step_ms"]


def test_the_probe_names_a_preloaded_openblas(tmp_path: Path) -> None:
    """The regime the issue measures in: Debian's OpenBLAS preloaded answers MLX's cblas_sgemm
    (tests/system_tools: .ci/run installs libopenblas0-pthread)."""
    from tests.system_tools import require_system_openblas

    openblas = require_system_openblas()
    write_tiny_model(tmp_path / "m", "llama")
    env = dict(os.environ, LD_PRELOAD=str(openblas), OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "cluster.bench.batch_probe", str(tmp_path / "m"), "--batches", "1,2",
                           "--float32", "--json"], env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "openblas" in json.loads(done.stdout)["blas"]
    plain = subprocess.run([sys.executable, "-m", "cluster.bench.batch_probe", str(tmp_path / "m"), "--batches", "1",
                            "--json"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert json.loads(plain.stdout)["blas"] == "MLX's bundled BLAS"
