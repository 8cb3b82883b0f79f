"""The batch's files: the work queue's format and atomic write, and the resumable parts of a run
(`<out>.parts/`), each part written aside and renamed (`models.files`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from models.files import write_csv_atomic, write_parquet_atomic, write_text_atomic
from serving.batch.rows import plain_text

PARTS_FORMAT = 1


def output_format(out: Path) -> str:
    """`.parquet` or `.csv`, from the output's name; anything else is an error (checked before any work)."""
    suffix = Path(out).suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ValueError(f"output must end in .parquet or .csv, not {Path(out).name!r}")
    return suffix


def write_atomic(rows: pd.DataFrame, out: Path) -> Path:
    """Write to a temporary file beside `out`, then rename: never a half-written file under the final name."""
    out = Path(out)
    if output_format(out) == ".parquet":
        return write_parquet_atomic(rows, out, private=True)
    return write_csv_atomic(rows, out, private=True)


class Parts:
    """Finished chunks of one output, kept in `<out>.parts/` until the run completes.

    `run.json` holds the key of what was scored (as-of, model, exploration, chunk size); parts of another key
    are removed. A chunk's part is `part-<index>-<fingerprint>.parquet`, written aside and renamed, so a part
    that exists is complete, and it is used only for a chunk with the same index and the same input rows.
    """

    def __init__(self, out: Path, key: dict):
        self.dir = Path(f"{out}.parts")
        self.key = {**key, "format": PARTS_FORMAT}

    def open(self) -> int:
        """Start or resume: returns how many parts are kept from an earlier, unfinished run."""
        stamp = self.dir / "run.json"
        if self.dir.exists() and (not stamp.exists() or json.loads(stamp.read_text()) != self.key):
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if not stamp.exists():
            write_text_atomic(json.dumps(self.key, indent=2), stamp, private=True)
        return len(list(self.dir.glob("part-*.parquet")))

    def _path(self, index: int, fingerprint: str) -> Path:
        return self.dir / f"part-{index:06d}-{fingerprint[:32]}.parquet"

    def has(self, index: int, fingerprint: str) -> bool:
        """Whether this chunk's part is there (a hint: `get` decides)."""
        return self._path(index, fingerprint).exists()

    def get(self, index: int, fingerprint: str) -> pd.DataFrame | None:
        """The finished rows of this chunk, or None when it has to be scored."""
        path = self._path(index, fingerprint)
        return plain_text(pd.read_parquet(path)) if path.exists() else None

    def put(self, index: int, fingerprint: str, rows: pd.DataFrame) -> None:
        """Keep a scored chunk (and drop a stale part of the same index)."""
        for stale in self.dir.glob(f"part-{index:06d}-*.parquet"):
            stale.unlink()
        write_parquet_atomic(rows, self._path(index, fingerprint), private=True)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
