"""Preemption: SIGTERM or SIGINT during training ends the run at the next iteration boundary.

A cluster that preempts a job sends SIGTERM and kills it a grace period later; Ctrl-C sends
SIGINT. While training, the handlers here only record the signal: the Runner finishes the
iteration in progress, writes a checkpoint and exits with ``128 + signal number`` (143 for
SIGTERM, 130 for SIGINT, the shell's convention). In a distributed run the ranks agree at
each boundary whether any of them got a signal, so a signal to one rank stops all of them
at the same iteration, and they save together.

A second SIGINT raises KeyboardInterrupt at once (a user pressing Ctrl-C again wants out).
A second SIGTERM does not: under torchrun, a preempted node's agent forwards the cluster's
SIGTERM to workers that already got it.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pluginloop.runner import Runner

__all__ = ["SIGNALS", "Preemption", "exit_code", "save_checkpoint"]

#: The signals that ask a training run to save and stop.
SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_code(signum: int) -> int:
    """The process exit status for a run stopped by ``signum``: ``128 + signum``."""
    return 128 + signum


def save_checkpoint(runner: Runner) -> Path:
    """Write the checkpoint a signal asks for, on every rank's behalf; return its path.

    A hook with ``save_now(runner)`` (CheckpointHook) writes it, so that it is rotated with
    the others and not written twice at one position; without one, the runner writes
    ``preempt_iter_<n>.pth`` into the work dir. Every rank calls this (the save is collective).
    """
    for _, plugin in runner._pm.list_name_plugin():
        save_now = getattr(plugin, "save_now", None)
        if callable(save_now):
            return Path(save_now(runner))
    return runner.save_checkpoint(f"preempt_iter_{runner.iter}.pth")


class Preemption:
    """Records the first of :data:`SIGNALS` received while entered (a context manager).

    ``signum`` is that signal's number, 0 while none came. Handlers are installed on entry
    and the previous ones restored on exit; off the main thread (where Python cannot handle
    signals) it installs nothing and ``signum`` stays 0.
    """

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Preemption:
        self.signum = 0
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, previous in self._previous.items():
            # None: a handler installed from C, which Python cannot put back; default instead.
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Only set the flag: logging or printing here can re-enter a write the main thread
        # was in the middle of ("reentrant call" errors).
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = self.signum or signum
