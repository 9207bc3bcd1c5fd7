"""Progress bars: live on a terminal; nothing in a file or pipe (CI logs, `make demo > log`).

Carriage-return frames would flood a log; there the loop's own one line per epoch is the progress.
"""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress(iterable, desc: str, show: bool = True) -> tqdm:
    """A tqdm bar over `iterable`, drawn only when `show` and stderr is a terminal."""
    return tqdm(iterable, desc=desc, leave=False, disable=not (show and sys.stderr.isatty()))
