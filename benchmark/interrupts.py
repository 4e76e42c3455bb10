"""Interrupts: SIGINT (Ctrl-C) and SIGTERM stop a sweep with a message instead of a traceback.

SIGTERM is turned into :class:`Terminated`, which, like ``KeyboardInterrupt`` for SIGINT, is a
``BaseException``: no ``except Exception`` on the way (a cache load, say) mistakes it for a bad file. The
runner turns either into :class:`Interrupted`, naming the runs that finished; the CLI prints it and exits with
128 + the signal number (130, 143), the shell's convention.
"""
from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator

EXIT_CODES = {"SIGINT": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}


class Terminated(BaseException):
    """The process received SIGTERM."""


class Interrupted(Exception):
    """A sweep stopped by a signal: ``signal`` (SIGINT or SIGTERM); the message says what was kept."""

    def __init__(self, signal_name: str, message: str) -> None:
        super().__init__(message)
        self.signal = signal_name

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.signal]


def signal_name(error: BaseException) -> str:
    """SIGTERM for :class:`Terminated`, SIGINT for ``KeyboardInterrupt``."""
    return "SIGTERM" if isinstance(error, Terminated) else "SIGINT"


def _raise_terminated(_signum: int, _frame: object) -> None:
    raise Terminated


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While the body runs (in the main thread), SIGTERM raises :class:`Terminated`; the old handler is put back."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
