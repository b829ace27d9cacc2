"""`cluster bench --json` runs end to end and reports consistent figures (no speed is asserted:
benchmarks print figures, tests do not time things)."""

import json

import pytest

from tests.cli_runner import kill_all, leftovers, run_cli
from tests.cluster_harness import write_inventory

pytestmark = pytest.mark.cluster  # starts worker processes: not in the quick loop


def test_bench_json_reports_both_sides(tmp_path, smollm2_dir):
    home = tmp_path / "home"
    inventory = write_inventory(tmp_path, nodes=2, model_path=smollm2_dir)
    try:
        result = run_cli(["bench", str(inventory), "--prompt-tokens", "8", "--gen-tokens", "4", "--json"], home,
                         timeout=300)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        cluster, single = report["cluster"], report["single_process"]
        assert cluster["stages"] == 2 and cluster["prefill_tokens"] == 8 and cluster["decode_tokens"] == 3
        assert single["prefill_tokens"] == 8 and single["decode_tokens"] == 3
        assert report["decode_ratio"] == cluster["decode_tps"] / single["decode_tps"]
        assert report["prefill_ratio"] == cluster["prefill_tps"] / single["prefill_tps"]
        assert cluster["step_ms_per_token"] >= cluster["compute_ms_per_token"] > 0
        assert leftovers(inventory, home) == []
    finally:
        kill_all(leftovers(inventory, home))


def test_bench_concurrency_writes_json_and_chart(tmp_path, smollm2_dir):
    home = tmp_path / "home"
    out = tmp_path / "results"
    inventory = write_inventory(tmp_path, nodes=3, model_path=smollm2_dir)
    try:
        result = run_cli(["bench", str(inventory), "--concurrency", "1,2", "--pinned", "--stages", "2",
                          "--prompt-tokens", "8", "--gen-tokens", "4", "--out", str(out), "--json"], home, timeout=600)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report == json.loads((out / "bench.json").read_text())
        assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert report["stages"] == 2 and report["levels"] == [1, 2]
        for side in (report["cluster"], report["single_process"], report["pinned"]["cluster"],
                     report["pinned"]["single_process"]):
            for level in ("1", "2"):
                figures = side[level]
                assert figures["streams"] == int(level) and figures["generated_tokens"] == 4 * int(level)
                assert figures["ttft_ms_p95"] >= figures["ttft_ms_p50"] > 0
                assert figures["itl_ms_p95"] >= figures["itl_ms_p50"] > 0
        assert sorted(report["pinned"]["placement"]) == ["w1", "w2"]
        pinned = report["pinned"]
        assert pinned["throughput_vs_pinned_single_stream"]["2"] == (
            pinned["cluster"]["2"]["tokens_per_s"] / pinned["single_process"]["1"]["tokens_per_s"])
        assert leftovers(inventory, home) == []
    finally:
        kill_all(leftovers(inventory, home))


def test_bench_float32_names_dtype_blas_and_ratios(tmp_path, smollm2_dir):
    """--float32 on a tiny 4-bit model (the demo's tokenizer): both sides serve its float32 copy, made
    once in the model cache, on the same BLAS; the report says so and gives the batching ratios."""
    from tests.system_tools import require_system_openblas
    from tests.tiny_models import write_quantized, write_tiny_model

    require_system_openblas()
    home = tmp_path / "home"
    model = write_quantized(write_tiny_model(tmp_path / "plain", "llama", tokenizer_from=smollm2_dir), tmp_path / "q4")
    inventory = write_inventory(tmp_path, nodes=2, model_path=model)
    args = ["bench", str(inventory), "--concurrency", "1,2", "--pinned", "--float32", "--prompt-tokens", "8",
            "--gen-tokens", "4", "--out", str(tmp_path / "results"), "--json"]
    try:
        result = run_cli(args, home, timeout=300)
        assert result.returncode == 0, result.stderr
        assert "dequantizing" in result.stderr
        report = json.loads(result.stdout)
        assert report["dtype"] == "float32"
        blas = report["blas"]
        assert sorted(blas["cluster"]) == ["w1", "w2"]
        assert all("openblas" in b for b in blas["cluster"].values()) and "openblas" in blas["single_process"], blas
        for section in (report, report["pinned"]):
            ratios = section["ratios"]
            assert ratios["level"] == 2
            assert ratios["cluster_vs_cluster_at_1"] == (
                section["cluster"]["2"]["tokens_per_s"] / section["cluster"]["1"]["tokens_per_s"])
            assert ratios["cluster_vs_single_process"] == (
                section["cluster"]["2"]["tokens_per_s"] / section["single_process"]["2"]["tokens_per_s"])
        copies = list((home / "models").glob("float32-q4-*"))
        assert len(copies) == 1
        again = run_cli(args[:-1], home, timeout=300)  # the table this time; the copy is reused
        assert again.returncode == 0, again.stderr
        assert "made before" in again.stderr and "dequantizing" not in again.stderr
        assert "model: float32; BLAS: cluster " in again.stdout and "cluster at 2 / cluster at 1:" in again.stdout
        assert leftovers(inventory, home) == []
    finally:
        kill_all(leftovers(inventory, home))
