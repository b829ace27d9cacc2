"""Plain-text tables for the terminal: columns padded to their widest cell."""

from __future__ import annotations

from typing import Sequence


def format_rows(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)
