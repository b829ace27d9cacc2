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
