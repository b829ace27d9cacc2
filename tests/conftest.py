"""Shared fixtures: the bundled SmolLM2 GGUF and its imported model directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.worker_blas import use_worker_blas

# References computed in this process use the BLAS the workers use (before anything imports MLX).
WORKER_BLAS = use_worker_blas()

# Nothing in the test suite may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Nor write into the user's ~/.boltpipe: clusters brought up in this process keep their secrets,
# models and run state in a directory of this test run (subprocesses get their own, tests/cli_runner).
os.environ["BOLTPIPE_HOME"] = tempfile.mkdtemp(prefix="boltpipe-test-home-")

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS_DATA = REPO_ROOT / "tests" / "data"

# The longest files first (pytest --durations shows them), so that with several test processes
# (pytest -n 2 --dist loadfile) none of them is left running one of these at the end alone.
LONGEST_FIRST = ("test_soak.py", "test_pipeline_equivalence.py", "test_openai_api.py", "test_ssh_deploy.py",
                 "test_faults.py", "test_structured_output.py", "test_api_deadline.py", "test_metrics_prometheus.py",
                 "test_cli_lifecycle.py",
                 "test_worker_fuzz.py", "test_family_pipelines.py", "test_ollama_serving.py", "test_model_too_large.py",
                 "test_lab_discovery.py",
                 "test_architectures.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within a file is kept


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from cluster.launch.demo_model import bundled_gguf_path

    return bundled_gguf_path()


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled GGUF imported once per test session."""
    from node.gguf import import_gguf

    out = tmp_path_factory.mktemp("smollm2") / "model"
    import_gguf(smollm2_gguf, out, progress=False)
    return out


@pytest.fixture(scope="session")
def k_quant_demo_gguf(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model as a Q4_K_M file would hold it (tests/gguf_models.k_quant_demo), written once."""
    from tests.gguf_models import k_quant_demo

    return k_quant_demo(smollm2_gguf, tmp_path_factory.mktemp("kquant") / "smollm2-Q4_K_M.gguf")


@pytest.fixture(scope="session", autouse=True)
def no_stray_processes():
    """Whatever a test started and left running is ended by pid when the session ends; the run's
    BOLTPIPE_HOME goes with it."""
    import psutil

    yield
    me = psutil.Process()
    children = me.children(recursive=True)
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=10)
    shutil.rmtree(os.environ["BOLTPIPE_HOME"], ignore_errors=True)
