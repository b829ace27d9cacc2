"""Import figures per GGUF file: seconds, seconds per GB, peak RSS and its growth over the runtime.
Each file is imported in a fresh process (after a tiny import that loads the runtime), into a
temporary directory. A measurement, not a test:

    .venv/bin/python -m tests.measure_gguf_import FILE.gguf [FILE.gguf ...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from tests.test_gguf_memory import MEASURE, REPO, TINY


def measure(path: Path) -> dict:
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([sys.executable, "-c", MEASURE, str(TINY), str(path), str(Path(out) / "model")],
                              capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{path}: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(paths: list[str]) -> None:
    import gguf

    print(f"{'file':40} {'types':34} {'MB':>7} {'s':>6} {'s/GB':>6} {'peak MB':>8} {'+MB':>6}")
    for name in paths:
        path = Path(name)
        kinds = Counter(t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors if len(t.shape) > 1)
        f = measure(path)
        size = path.stat().st_size
        print(f"{path.name[:40]:40} {', '.join(k for k, _ in kinds.most_common(3))[:34]:34} {size / 1e6:7.1f} "
              f"{f['seconds']:6.2f} {f['seconds'] / (size / 1e9):6.1f} {f['peak'] / 1e6:8.0f} "
              f"{(f['peak'] - f['runtime']) / 1e6:6.0f}")


if __name__ == "__main__":
    main(sys.argv[1:])
