"""`cluster bench --json` runs end to end and reports consistent figures (no speed is asserted:
benchmarks print figures, tests do not time things)."""

import json

from tests.cli_runner import kill_all, leftovers, run_cli
from tests.cluster_harness import write_inventory


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
