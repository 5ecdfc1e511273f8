"""The worker processes of a pack: tasks run in order by a bounded pool whose workers die with the pack's process
(Linux's parent-death signal), their result arrays handed back through a scratch file rather than pickled; and the
progress bar they run under."""

from __future__ import annotations

import ctypes
import mmap
import multiprocessing
import os
import signal
import sys
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from aekit.atomic import writing
from aekit.errors import DataError

# prctl's option that has the kernel send a signal to a process when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


class Pool:
    """Tasks run in order by ``workers`` processes (in this process where there is one), at most two tasks a worker
    in flight, so memory holds a bounded number of results whatever the number of tasks; result arrays can come back
    through a scratch file in the folder ``scratch`` (see :meth:`map`)."""

    def __init__(self, workers: int, scratch: Path):
        self.workers, self.scratch = workers, scratch
        self.executor = None

    def map(self, function, tasks, array_bytes: int = 0) -> Iterator:
        """``function(task)`` of each task, in order. With ``array_bytes``, each result is (an array of at most that
        many bytes, *rest), and the array comes back through a file both processes map (:class:`_Slots`), not
        pickled through the executor's pipe, which cost the main process more than hashing and writing it: a view
        that stays valid until the next result is asked for."""
        if self.workers == 1:
            yield from map(function, tasks)
            return
        if self.executor is None:
            # The workers' parent: this process, unless a fork server starts them (it ends when this process does).
            parent = None if multiprocessing.get_start_method() == "forkserver" else os.getpid()
            self.executor = ProcessPoolExecutor(self.workers, initializer=_worker_start, initargs=(parent,))
        slots = _Slots(self.scratch, 2 * self.workers + 1, array_bytes) if array_bytes else None
        pending = deque()
        try:
            for k, task in enumerate(tasks):
                if slots is None:
                    pending.append(self.executor.submit(function, task))
                else:
                    pending.append(self.executor.submit(_into_slot, function, task, slots.path, *slots.slot(k)))
                if len(pending) >= 2 * self.workers:
                    yield _result(pending.popleft(), slots)
            while pending:
                yield _result(pending.popleft(), slots)
        finally:
            for future in pending:
                future.cancel()
            if slots is not None:
                slots.remove()

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)


class _Slots:
    """A scratch file in ``folder`` of ``count`` slots of ``size`` bytes each, mapped here: workers write result
    arrays into slots (:func:`_into_slot`), this process reads them where they lie."""

    def __init__(self, folder: Path, count: int, size: int):
        self.count, self.size = count, size
        with writing(folder):
            fd, self.path = tempfile.mkstemp(dir=folder, prefix=".slots-")
            try:
                os.ftruncate(fd, count * size)
                self.mapped = mmap.mmap(fd, count * size, access=mmap.ACCESS_READ)
            finally:
                os.close(fd)

    def slot(self, k: int) -> tuple[int, int]:
        """Where the result of task ``k`` goes: (offset, size). Slots are reused in turn: the map has at most
        count - 1 tasks in flight besides the result being read."""
        return k % self.count * self.size, self.size

    def view(self, offset: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        return np.ndarray(shape, np.dtype(dtype), buffer=self.mapped, offset=offset)

    def remove(self) -> None:
        # Unlinked, not closed: views of the map may outlive the map call; it goes with the last of them.
        with writing(self.path):
            os.unlink(self.path)


def _worker_start(parent: int | None) -> None:
    """Worker: signals are the pack's process's to handle (Ctrl-C or SIGTERM sent to the whole process group stops it,
    and it then shuts the pool down), and the worker dies with its parent, even one SIGKILLed (Linux: the kernel's
    parent-death signal), rather than wait on its pipe for ever holding the scratch file."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent is not None and os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def _into_slot(function, task, path: str, offset: int, size: int) -> tuple:
    """Worker: ``function(task)`` = (array, *rest), the array written into the scratch file ``path`` at ``offset``;
    returns (offset, its shape, its dtype, *rest)."""
    array, *rest = function(task)
    array = np.ascontiguousarray(array)
    if array.nbytes > size:
        raise AssertionError(f"a result of {array.nbytes} bytes for a slot of {size}")
    with open(path, "r+b") as file:
        file.seek(offset)
        file.write(memoryview(array).cast("B"))
    return (offset, array.shape, array.dtype.str, *rest)


def _result(future, slots: _Slots | None):
    """A task's result, its array read from ``slots`` where it has one."""
    try:
        result = future.result()
    except BrokenProcessPool:
        raise DataError(
            "a worker process reading images died (out of memory?); pack again with fewer --workers"
        ) from None
    if slots is None:
        return result
    offset, shape, dtype, *rest = result
    return (slots.view(offset, shape, dtype), *rest)


def progress_bar(total: int, desc: str, unit: str, progress: bool):
    """A progress bar of ``total`` ``unit``s, shown where ``progress`` and the output is a terminal."""
    from tqdm.auto import tqdm

    class Bar(tqdm):
        monitor_interval = 0  # no monitor thread: worker processes are forked while a bar is open

    return Bar(total=total, desc=desc, unit=unit, disable=None if progress else True, leave=False)
