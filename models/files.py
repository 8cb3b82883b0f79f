"""Every file the product writes, written atomically: into a temporary file beside the target, flushed to disk,
then renamed into place, so no reader (or a run started again after a kill) ever finds half a file under the
final name. Both `pipelines/` and `serving/` write through here.

Permissions: a temporary file is created owner-only (0600). The batch's files (work queue, parts, summary,
report) always kept that; every other file gets what a plain `open()` gives it (0666 less the umask), as it
had before it was written atomically. Callers say which with `private`.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


@functools.cache
def _open_mode() -> int:
    """The permissions `open()` gives a new file: 0666 less the process's umask (read once)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def replace_atomically(out: Path, write: Callable[[str], Any], private: bool = False) -> Path:
    """Call `write(tmp)` on a temporary file beside `out`, flush it to disk, then rename it to `out` (whose
    folder is made when missing); the temporary file never outlives the call."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        if not private:
            os.chmod(tmp, _open_mode())
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def write_text_atomic(text: str, out: Path, private: bool = False) -> Path:
    """A text file (UTF-8) written aside, then renamed into place."""
    return replace_atomically(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), private)


def write_json_atomic(value: Any, out: Path, newline: bool = False, **dumps: Any) -> Path:
    """`json.dumps(value, **dumps)` (a final newline when asked) written atomically."""
    return write_text_atomic(json.dumps(value, **dumps) + ("\n" if newline else ""), out)


def write_parquet_atomic(rows, out: Path, private: bool = False) -> Path:
    """A data frame as parquet (no index), written atomically."""
    return replace_atomically(out, lambda tmp: rows.to_parquet(tmp, index=False), private)


def write_csv_atomic(rows, out: Path, private: bool = False) -> Path:
    """A data frame as CSV (no index), written atomically."""
    return replace_atomically(out, lambda tmp: rows.to_csv(tmp, index=False), private)


def write_joblib_atomic(value: Any, out: Path, private: bool = False) -> Path:
    """An object pickled by joblib (uncompressed, as `joblib.dump` to a `.joblib` name), written atomically."""
    import joblib  # only the trained bundle is written this way

    return replace_atomically(out, lambda tmp: joblib.dump(value, tmp), private)
