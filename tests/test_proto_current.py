"""The committed protobuf modules are what boltpipe.proto generates today."""

from proto.regenerate import stale_files


def test_generated_modules_match_proto():
    stale = stale_files()
    assert stale == [], f"stale generated files {stale}: run `python -m proto.regenerate` and commit"
