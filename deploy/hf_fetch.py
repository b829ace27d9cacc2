"""Download from a Hugging Face repository only what one stage needs.

    python -m deploy.hf_fetch --repo R --dest D --layers START END --num-layers N [--revision X]

Fetches config.json (and generation_config.json if the repository has one), the weight index, then
only the weight files holding the stage's tensors. D is then a partial model directory:
deploy.shards.cut_shard(D, START, END, OUT) turns it into a shard a worker loads. Thin on purpose and
untested here (no hub is reachable from the test machines); the file choice is tested in
tests/test_hf_select.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from deploy.hf_select import download_stage_files
from deploy.stage_tensors import INDEX_FILE, SMALL_FILES, files_for_stage
from node.architectures import text_config
from node.tensor_names import extra_layer_count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.hf_fetch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", required=True,
                        help="Hugging Face repository id, e.g. mlx-community/Llama-3.2-3B-Instruct")
    parser.add_argument("--dest", required=True, type=Path, help="directory to download into")
    parser.add_argument("--layers", required=True, nargs=2, type=int, metavar=("START", "END"),
                        help="the stage's layers [START, END)")
    parser.add_argument("--num-layers", required=True, type=int, help="the model's num_hidden_layers")
    parser.add_argument("--revision", help="branch, tag or commit")
    args = parser.parse_args(argv)

    from huggingface_hub.errors import EntryNotFoundError

    start, end = args.layers
    if not 0 <= start < end <= args.num_layers:
        parser.error(f"--layers {start} {end} is not a range within --num-layers {args.num_layers}")

    def optional(name: str) -> Path | None:
        try:
            return download_stage_files(args.repo, [name], args.dest, args.revision)[0]
        except EntryNotFoundError:
            return None

    config_path = download_stage_files(args.repo, [SMALL_FILES[0]], args.dest, args.revision)[0]
    for name in SMALL_FILES[1:]:
        optional(name)
    index_path = optional(INDEX_FILE)
    index = json.loads(index_path.read_text()) if index_path is not None else None
    extra_layers = extra_layer_count(text_config(json.loads(config_path.read_text())))
    files = files_for_stage(index, start, end, args.num_layers, extra_layers)
    for path in download_stage_files(args.repo, files, args.dest, args.revision):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
