"""Stops that never split a step from its record: Ctrl-C, SIGTERM and SIGHUP are held for the length of a block
(hold_interrupts) and, while a run trains, SIGTERM and SIGHUP stop it as Ctrl-C does (stops_save), so train() saves
its checkpoint first. The workbook's machinery; training/loop.py calls both."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

__all__ = ["STOP_SIGNALS", "stops_save", "hold_interrupts"]

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextmanager
def stops_save():
    """SIGTERM and SIGHUP (a cluster's time limit, ``kill``, a closed terminal) stop training as Ctrl-C does: a
    KeyboardInterrupt, so the checkpoint is saved first. In the main thread only; the handlers are put back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.default_int_handler) for s in STOP_SIGNALS[1:]}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


@contextmanager
def hold_interrupts():
    """Hold a Ctrl-C (or SIGTERM, SIGHUP) until the block is done, so that an update and its record happen together
    or not at all. Only where Python's own handler is in place: a handler of someone else (torchrun's stop flag)
    already makes a stop safe."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    caught = []
    previous = {s: signal.signal(s, lambda *_: caught.append(True)) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
    if caught:
        raise KeyboardInterrupt
