"""Stopping a run on a signal without losing work: SIGTERM (a scheduler's stop, then kill), SIGINT (Ctrl-C) and
SIGUSR1 (Slurm's warning before the time limit, ``--signal=USR1@SECONDS``).

While a ``StopSignals`` is entered, the first such signal only records itself: the loop finishes the optimizer step
it is in, every process agrees on stopping (the signal's flag rides in the step's all-reduce), ``last/`` is saved at
that exact step, and ``Interrupted`` carries the one line to print and the exit status 128 + signal, which
schedulers requeue on. The same signal delivered twice at once (a terminal's Ctrl-C reaches torchrun and its workers,
and torchrun passes it on) counts once; a second signal later stops at once (``KeyboardInterrupt`` for SIGINT,
``SystemExit`` otherwise), and an atomic save it interrupts leaves ``last/`` as it was.
"""

from __future__ import annotations

import signal
import threading
import time

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
SAME_DELIVERY_S = 2.0  # a repeat within this long is the same stop request, passed on by torchrun


class Interrupted(Exception):
    """A run that a signal stopped after saving ``last/``: the message is the line to print (where it stopped and
    how to resume), ``exit_code`` is 128 + the signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """Record the first stop signal instead of dying of it, once ``armed`` (the loop arms it when it starts taking
    steps; before that there is nothing to save and a signal stops at once). Handlers are installed in the main
    thread only, where Python delivers signals."""

    def __init__(self) -> None:
        self.armed = False
        self.received: int | None = None
        self._at = 0.0
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        if not self.armed:
            self._stop_now(signum)
        if self.received is None:
            self.received, self._at = signum, time.monotonic()
        elif time.monotonic() - self._at > SAME_DELIVERY_S:
            self._stop_now(signum)

    @staticmethod
    def _stop_now(signum: int) -> None:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def interrupted(self, message: str) -> Interrupted:
        """The ``Interrupted`` to raise once ``last/`` is saved."""
        return Interrupted(message, self.received or signal.SIGTERM)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """A loader worker's ``worker_init_fn``: a terminal's Ctrl-C and a scheduler's SIGTERM reach every process of
    the group, and a worker that died of one would break the step the main process is finishing."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
