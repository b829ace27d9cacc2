"""Import streams tensor by tensor: a 100 MB K-quant GGUF is imported in a fresh process whose peak
RSS, above what the runtime itself takes (measured by importing a tiny file first, in the same
process), stays under twice the largest tensor (as float32, the widest working form a block of rows
takes) and well under the file itself (so the file is neither read whole nor held mapped)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gguf
import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "data" / "gguf" / "tiny-llama-Q4_K_M.gguf"

MEASURE = """
import json, sys, tempfile
from pathlib import Path
from node.gguf import import_gguf

def peak():
    # VmHWM: this process's own high-water mark (ru_maxrss keeps the parent's across fork and exec).
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024

with tempfile.TemporaryDirectory() as d:
    import_gguf(Path(sys.argv[1]), Path(d) / "tiny", progress=False)   # the runtime: mlx, numpy, gguf, tokenizers
runtime = peak()
summary = import_gguf(Path(sys.argv[2]), Path(sys.argv[3]), progress=False)
print(json.dumps({"runtime": runtime, "peak": peak(), "seconds": summary.elapsed_s}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the peak from Linux's /proc")
def test_peak_memory_of_a_100_mb_import(k_quant_demo_gguf: Path, tmp_path: Path) -> None:
    size = k_quant_demo_gguf.stat().st_size
    assert size > 100e6
    largest_f32 = 4 * max(t.n_elements for t in gguf.GGUFReader(str(k_quant_demo_gguf)).tensors)
    result = subprocess.run([sys.executable, "-c", MEASURE, str(TINY), str(k_quant_demo_gguf), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    grew = figures["peak"] - figures["runtime"]
    print(f"import of {size / 1e6:.0f} MB: runtime {figures['runtime'] / 1e6:.0f} MB, peak {figures['peak'] / 1e6:.0f} MB "
          f"(+{grew / 1e6:.0f} MB; largest tensor as float32 {largest_f32 / 1e6:.0f} MB), {figures['seconds']:.1f} s")
    assert grew < 2 * largest_f32
    assert grew < 0.8 * size
    assert (tmp_path / "out" / "model.safetensors").is_file()
