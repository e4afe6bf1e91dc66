"""Progress reports that suit where they go: a tqdm bar on a terminal, plain lines in a log.

Every progress bar of the project goes through :func:`progress_bar`. On a terminal it is a
``tqdm`` bar, redrawn in place. When standard error is not a terminal (a CI log, a file, a
pipe) a bar's carriage-return redraws would fill the log with one long line of overwritten
states, so it prints plain lines instead, each ending in a newline and none with ``\\r``: one
at most every ``interval`` seconds (default :data:`PLAIN_INTERVAL_S`) and one when the loop
ends, e.g. ``train: 12/30 epoch (40%), 3.1 s, loss=0.1234``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator

__all__ = ["PLAIN_INTERVAL_S", "PlainProgress", "progress_bar"]

#: Seconds between two plain progress lines (the last step is always reported).
PLAIN_INTERVAL_S = 10.0


class PlainProgress:
    """Iterates over ``iterable`` and prints ``desc: done/total unit (share), seconds,
    postfix`` lines to ``file``: at most one every ``interval`` seconds, and the last one."""

    def __init__(self, iterable: Iterable, *, desc: str, unit: str, file, total=None,
                 interval: float = PLAIN_INTERVAL_S):
        self.iterable = iterable
        self.desc, self.unit, self.file, self.interval = desc, unit, file, interval
        if total is None:
            try:
                total = len(iterable)           # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total = total
        self.postfix = ""
        self.done = 0

    def set_postfix(self, **values) -> None:
        """Values shown at the end of the next line (as ``tqdm.set_postfix``)."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def _line(self, elapsed: float) -> str:
        count = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        tail = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {count} {self.unit}{share}, {elapsed:.1f} s{tail}"

    def __iter__(self) -> Iterator:
        start = last = time.monotonic()
        pending = False
        for item in self.iterable:
            yield item                          # the caller's step (and set_postfix) runs here
            self.done += 1
            pending = True
            now = time.monotonic()
            if now - last >= self.interval and (self.total is None or self.done < self.total):
                print(self._line(now - start), file=self.file, flush=True)
                last, pending = now, False
        if pending:
            print(self._line(time.monotonic() - start), file=self.file, flush=True)


class _Silent:
    """No output: the loop as it is, with a ``set_postfix`` that does nothing."""

    def __init__(self, iterable: Iterable):
        self.iterable = iterable

    def set_postfix(self, **values) -> None:
        pass

    def __iter__(self) -> Iterator:
        return iter(self.iterable)


def progress_bar(iterable: Iterable, *, desc: str, unit: str = "it", enabled: bool = True,
                 total=None, file=None, interval: float = PLAIN_INTERVAL_S):
    """``iterable`` with a progress report on ``file`` (default ``sys.stderr``).

    Not ``enabled``: nothing. ``file`` a terminal: a ``tqdm`` bar that leaves no line behind.
    Otherwise: :class:`PlainProgress` lines. Either way the result is iterated like
    ``iterable`` and has ``set_postfix(**values)``.
    """
    if not enabled:
        return _Silent(iterable)
    file = sys.stderr if file is None else file
    isatty = getattr(file, "isatty", None)
    if isatty is not None and isatty():
        from tqdm.auto import tqdm
        return tqdm(iterable, desc=desc, unit=unit, total=total, file=file, leave=False)
    return PlainProgress(iterable, desc=desc, unit=unit, file=file, total=total,
                         interval=interval)
