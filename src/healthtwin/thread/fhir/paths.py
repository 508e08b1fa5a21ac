"""Which files an ingest reads (standard library only: the CLI uses it before it forks the
reader processes)."""

from __future__ import annotations

from pathlib import Path

SUFFIXES = (".json", ".ndjson", ".jsonl", ".json.gz", ".ndjson.gz")


def expand_paths(paths: list[str]) -> list[str]:
    """Files named, and FHIR files (by suffix) found recursively in folders, sorted; '-' is stdin."""
    out: list[str] = []
    for p in paths:
        if p == "-":
            out.append(p)
            continue
        path = Path(p)
        if path.is_dir():
            out.extend(
                str(f) for f in sorted(path.rglob("*")) if f.is_file() and f.name.endswith(SUFFIXES)
            )
        elif path.exists():
            out.append(str(path))
        else:
            raise FileNotFoundError(f"input not found: {p}")
    return out


__all__ = ["SUFFIXES", "expand_paths"]
