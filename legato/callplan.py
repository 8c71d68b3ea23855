"""How the model is called for a request: planned by timing, like FFTW's planner.

A PIMD step asks for B beads of N atoms. One model call on all of them, one call per
bead, or anything in between can be fastest: it depends on the model's width, N, the
machine's cores and caches (on 2 CPU cores and the shipped model, 4-frame chunks of
16 atoms beat one call of 32 frames by 1.5x, docs/performance.md). So can the number of
torch threads: with another job on one of 2 cores, two threads made brute-force PIMD 3x slower
than one (docs/performance.md). A fixed default goes stale when the model or the machine's
load changes, so :class:`CallPlanner` measures instead.

A way to call is a :class:`Way`: frames per call and torch threads. For each request shape
(B, N) the planner serves the first calls with each candidate in turn (1, 2, 4, ... frames,
and all B, as far as ``max_atoms`` per call allows; each thread count it was given),
``trials`` rounds each after one warm-up call at the ``first_atoms`` default,
and keeps the way with the least time per call (the fastest of its trials, as
timings on a shared machine only err upwards). Trial calls are real calls: their
results are used, so planning wastes no step, only runs some of the first
``1 + trials * len(candidates)`` steps a slower way. The plan is reported once per
shape through ``report`` (a callable taking one line).
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple, Optional, Sequence


def candidate_chunks(n_frames: int, n_atoms: int, max_atoms: int) -> list[int]:
    """Frames per call worth timing for ``n_frames`` of ``n_atoms``: powers of two below
    ``n_frames``, and all of them, up to ``max_atoms`` atoms per call (at least one frame)."""
    chunks = [1 << k for k in range(n_frames.bit_length()) if 1 << k < n_frames] + [n_frames]
    return [c for c in chunks if c == 1 or c * n_atoms <= max_atoms]


class Way(NamedTuple):
    """How to call the model: ``frames`` per call, ``threads`` torch threads (None: as they are)."""

    frames: int
    threads: Optional[int] = None


def candidate_ways(n_frames: int, n_atoms: int, max_atoms: int, threads: Sequence[Optional[int]] = (None,)) -> list[Way]:
    """Every candidate chunk (:func:`candidate_chunks`) with every thread count."""
    return [Way(chunk, count) for count in threads for chunk in candidate_chunks(n_frames, n_atoms, max_atoms)]


class CallPlanner:
    """The way to call the model for each request shape (frames, atoms), chosen by timing the first calls."""

    def __init__(
        self,
        first_atoms: int = 64,
        max_atoms: int = 4096,
        trials: int = 2,
        threads: Sequence[int] = (),
        use_threads: Callable[[int], None] | None = None,
        report: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        """``first_atoms``: atoms per call until a shape is planned (and for shapes seen once);
        ``max_atoms``: the largest call timed (memory grows with it); ``threads``: thread
        counts to time, the first also for the warm-up (empty: threads are left as they are),
        set before each call by ``use_threads(count)``."""
        if trials < 1:
            raise ValueError(f"trials={trials}: give at least 1")
        if threads and use_threads is None:
            raise ValueError("thread counts to time need use_threads to set them")
        self.first_atoms = first_atoms
        self.max_atoms = max_atoms
        self.trials = trials
        self.threads: tuple[Optional[int], ...] = tuple(threads) or (None,)
        self.use_threads = use_threads
        self.report = report
        self.clock = clock
        self.plans: dict[tuple[int, int], Way] = {}  # (frames, atoms) -> the way to call
        self._schedule: dict[tuple[int, int], list[Way]] = {}  # ways still to time, in order (warm-up first)
        self._seconds: dict[tuple[int, int], dict[Way, float]] = {}  # fastest time seen per way

    def way(self, n_frames: int, n_atoms: int) -> Way:
        """The way to call for this request: the plan, or the candidate this call times."""
        key = (n_frames, n_atoms)
        if key in self.plans:
            return self.plans[key]
        ways = candidate_ways(n_frames, n_atoms, self.max_atoms, self.threads)
        if len(ways) == 1:
            self.plans[key] = ways[0]
            return ways[0]
        if key not in self._schedule:
            # the first call pays one-off costs (allocations, lazy set-up): a warm-up, not counted
            first = Way(min(n_frames, max(1, self.first_atoms // n_atoms)), self.threads[0])
            self._schedule[key] = [first] + ways * self.trials
            self._seconds[key] = {}
        return self._schedule[key][0]

    def calls_to_plan(self, n_frames: int, n_atoms: int) -> int:
        """Calls a request shape takes before its plan is fixed: the warm-up and ``trials`` of
        every candidate way (0 where there is only one way)."""
        ways = len(candidate_ways(n_frames, n_atoms, self.max_atoms, self.threads))
        return 1 + ways * self.trials if ways > 1 else 0

    def chunk(self, n_frames: int, n_atoms: int) -> int:
        """Frames per call for this request (see :meth:`way`)."""
        return self.way(n_frames, n_atoms).frames

    def timed(self, n_frames: int, n_atoms: int, evaluate: Callable[[int], object]):
        """``evaluate(frames per call)`` the planned or candidate way (its threads set first),
        timed while the shape is planned."""
        key = (n_frames, n_atoms)
        way = self.way(n_frames, n_atoms)
        if way.threads is not None:
            self.use_threads(way.threads)
        if key in self.plans:
            return evaluate(way.frames)
        start = self.clock()
        result = evaluate(way.frames)
        self._record(key, self.clock() - start)
        return result

    def _record(self, key: tuple[int, int], seconds: float) -> None:
        schedule = self._schedule[key]
        warm_up = len(schedule) == self.calls_to_plan(*key)
        way = schedule.pop(0)
        if not warm_up:
            seen = self._seconds[key]
            seen[way] = min(seconds, seen.get(way, float("inf")))
        if schedule:
            return
        seen = self._seconds.pop(key)
        del self._schedule[key]
        best = min(seen, key=seen.get)
        self.plans[key] = best
        if self.report:
            with_threads = best.threads is not None and len(self.threads) > 1
            label = (lambda w: f"{w.frames}/{w.threads}") if with_threads else (lambda w: f"{w.frames}")
            threads = f", {best.threads} thread(s)" if best.threads is not None else ""
            timings = ", ".join(f"{label(w)}: {1e3 * s:.1f}" for w, s in sorted(seen.items(), key=lambda item: (item[0].threads or 0, item[0].frames)))
            self.report(
                f"call plan for {key[0]} frames x {key[1]} atoms: {best.frames} frame(s) per model call{threads}"
                f" (ms per request by frames per call{'/threads' if with_threads else ''}, fastest of {self.trials}: {timings})"
            )
