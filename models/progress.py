"""Progress for the command line's long steps: on a terminal, a rich spinner (or a bar when the amount of work
is known) with the elapsed time; nothing in a log file or a CI log (stderr is not a terminal) and nothing under
`cureflow --quiet` (which sets CUREFLOW_QUIET=1). The steps' one-line results are printed as before, so a log
loses nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def enabled() -> bool:
    """Whether progress is shown: stderr is a terminal and CUREFLOW_QUIET is not set."""
    return sys.stderr.isatty() and os.environ.get("CUREFLOW_QUIET", "") in ("", "0")


@contextmanager
def step(description: str, total: float | None = None) -> Iterator[Callable[[float], None]]:
    """Show `description` with a spinner and the elapsed time while the block runs (with `total`, a bar:
    call the yielded function with the amount done so far). The line disappears when the block ends."""
    if not enabled():
        yield lambda done: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn

    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if total:
        columns += [BarColumn(), TaskProgressColumn()]
    with Progress(*columns, TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)
