"""The series benchmarks' files, fitted and scored side by side in worker processes, one thread each.

Each file gets its own detector, seeded by its configuration, so files are independent and their order does not
matter: running them in parallel gives the same figures as running them one after the other. What does change a
figure is the number of threads one fit uses (a matrix product's sums in another order; on one UCR series a
score moved by 7e-6 between one and two torch threads), so every file is fitted and scored with exactly one
thread in every numeric pool (torch's, numpy's BLAS, OpenMP), in a worker or in this process: the benchmarks give
the same numbers on any machine whatever its core count, and on two cores two files at a time take about half the
wall time of one file with two threads (a small U-Net does not keep two threads busy).

Workers are started with ``spawn``: a forked child of a process whose OpenMP pool has run can hang in its first
parallel region.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_jobs() -> int:
    """The cores this process may run on (its affinity, where the platform tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def one_thread() -> Iterator[None]:
    """One thread in every numeric pool of this process (torch's; numpy's BLAS and OpenMP through threadpoolctl:
    the discord channels multiply matrices in numpy) for the duration, then the previous settings."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(before)


def _worker_start(log_level: int) -> None:
    """A worker's numeric pools at one thread, its log records formatted as the command's own (the CLI configures
    logging in the parent only), and a watch on its parent."""
    import torch
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # for the worker's life
    torch.set_num_threads(1)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="parent-watch", daemon=True).start()


def _exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    """End this worker once its parent is gone. Ctrl-C reaches every process of the terminal's group, but a command
    stopped by ``kill`` or by a job scheduler takes only the parent: its workers would fit and score on for
    minutes, with no one to read what they find."""
    while os.getppid() == parent:
        time.sleep(every_s)
    os._exit(1)


def map_files(fn: Callable[[T], R], items: Sequence[T], jobs: int,
              done: Callable[[int, R], None] = lambda i, r: None) -> list[R]:
    """``[fn(item) for item in items]`` on up to ``jobs`` worker processes, each with one thread per pool; ``done(i,
    result)`` is called in this process as each item finishes (progress bars), in completion order. ``fn`` and
    the items must pickle (``fn`` a module-level function). The first exception raised by ``fn`` is raised here,
    once the items not yet started are cancelled and those in flight have finished."""
    results: list[R | None] = [None] * len(items)
    if jobs <= 1 or len(items) <= 1:
        with one_thread():
            for i, item in enumerate(items):
                results[i] = fn(item)
                done(i, results[i])
        return results  # type: ignore[return-value]
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(items)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_start, initargs=(logging.getLogger().getEffectiveLevel(),))
    try:
        index: dict[Future, int] = {pool.submit(fn, item): i for i, item in enumerate(items)}
        pending = set(index)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(finished, key=index.__getitem__):
                results[index[future]] = future.result()  # raises the worker's exception
                done(index[future], results[index[future]])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results  # type: ignore[return-value]
