"""What `cluster bench` changes in the inventory before it brings a cluster up (no processes)."""

import argparse

import pytest

from cluster.commands.bench import _inventory
from tests.cluster_harness import write_inventory


def _args(inventory, **flags) -> argparse.Namespace:
    defaults = {"inventory": inventory, "stages": None, "float32": False, "concurrency": None}
    return argparse.Namespace(**(defaults | flags))


def test_load_runs_measure_batching_alone(tmp_path, smollm2_dir):
    """A load run repeats its prompts (the pinned run after the unpinned one, stream 1 of every level):
    with the prefix cache on they would start from kept prefixes, and a lone stream would draft,
    which the one-process baseline does neither of."""
    inventory = write_inventory(tmp_path, nodes=3, model_path=smollm2_dir)
    served = _inventory(_args(inventory, concurrency=[1, 8], stages=2))
    assert (served.prefix_cache, served.speculation, len(served.nodes)) == (False, "off", 2)


def test_other_runs_keep_the_inventory_settings(tmp_path, smollm2_dir):
    inventory = write_inventory(tmp_path, nodes=2, model_path=smollm2_dir)
    served = _inventory(_args(inventory))
    assert (served.prefix_cache, served.speculation) == (True, "prompt_lookup")


@pytest.mark.parametrize("argv, message", [
    (["--speculative", "--concurrency", "1"], "--speculative measures one stream; leave out --concurrency"),
    (["--structured", "--speculative"], "--structured measures one stream at a time"),
    (["--structured", "--repeats", "0"], "--repeats must be at least 1"),
    (["--speculative", "--repeats", "0"], "--repeats must be at least 1"),
    (["--pinned"], "--pinned goes with --concurrency"),
])
def test_conflicting_flags_are_refused_before_anything_starts(argv, message):
    from cluster.cli import build_parser

    args = build_parser().parse_args(["bench", "inventory.yaml", *argv])
    with pytest.raises(SystemExit, match=message):
        args.run(args)
