"""The import marker (boltpipe_import.json) and the rules for an output directory that already exists.

Policy: a missing or empty OUTDIR is imported into. An OUTDIR whose marker names the same source
(size + sha256) and this importer version is already done: the import is skipped. Same source but an
older importer version: it is rebuilt and replaced. Anything else non-empty (another model, stray
files) is refused, so the importer never deletes what it did not write.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .errors import GGUFImportError

IMPORTER_VERSION = "2"  # 2: K-quants, more types and architectures
MARKER_NAME = "boltpipe_import.json"


@dataclass(frozen=True)
class SourceId:
    name: str
    size: int
    sha256: str


def hash_source(path: Path, progress: bool) -> SourceId:
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as fh, tqdm(
        total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"hashing {path.name}",
        file=sys.stderr, disable=not progress, leave=False,
    ) as bar:
        while chunk := fh.read(16 * 1024 * 1024):
            digest.update(chunk)
            bar.update(len(chunk))
    return SourceId(path.name, size, digest.hexdigest())


def read_marker(dst: Path) -> dict[str, Any] | None:
    try:
        return json.loads((dst / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def write_marker(dst: Path, source: SourceId, extra: dict[str, Any]) -> None:
    marker = {
        "importer": "boltpipe.node.gguf",
        "importer_version": IMPORTER_VERSION,
        "source": {"name": source.name, "size": source.size, "sha256": source.sha256},
        **extra,
    }
    (dst / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")


def existing_output_state(dst: Path) -> str:
    """'absent', 'empty' or 'previous' (a marker is present: the caller compares it); refuses the rest."""
    if not dst.exists():
        return "absent"
    if not dst.is_dir():
        raise GGUFImportError(f"output {dst} exists and is not a directory; choose a directory path for OUTDIR.")
    if not any(dst.iterdir()):
        return "empty"
    if read_marker(dst) is None:
        raise GGUFImportError(
            f"output directory {dst} is not empty and holds no {MARKER_NAME}, so it is not a previous import; "
            f"refusing to overwrite it. Choose a new OUTDIR (it will be created) or empty this one."
        )
    return "previous"


def same_source(marker: dict[str, Any], source: SourceId) -> bool:
    recorded = marker.get("source") or {}
    return recorded.get("sha256") == source.sha256 and recorded.get("size") == source.size


def refuse_other_import(dst: Path, marker: dict[str, Any], src: Path) -> GGUFImportError:
    recorded = marker.get("source") or {}
    return GGUFImportError(
        f"output directory {dst} holds an import of {recorded.get('name')!r} "
        f"(sha256 {str(recorded.get('sha256'))[:12]}..), not of {src.name}; refusing to overwrite another "
        "model. Choose a new OUTDIR or delete that one first."
    )
