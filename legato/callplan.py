"""How many frames go to the model per call: planned by timing, like FFTW's planner.

A PIMD step asks for B beads of N atoms. One model call on all of them, one call per
bead, or anything in between can be fastest: it depends on the model's width, N, the
machine's cores and caches (on 2 CPU cores and the shipped model, 4-frame chunks of
16 atoms beat one call of 32 frames by 1.5x, docs/performance.md). A fixed default goes
stale when the model changes, so :class:`CallPlanner` measures instead.

For each request shape (B, N) it serves the first calls with each candidate chunk in
turn (1, 2, 4, ... frames, and all B, as far as ``max_atoms`` per call allows),
``trials`` rounds each after one warm-up call at the ``first_atoms`` default,
and keeps the chunk with the least time per call (the fastest of its trials, as
timings on a shared machine only err upwards). Trial calls are real calls: their
results are used, so planning wastes no step, only runs some of the first
``1 + trials * len(candidates)`` steps at a slower chunk. The plan is reported once per
shape through ``report`` (a callable taking one line).
"""

from __future__ import annotations

import time
from typing import Callable


def candidate_chunks(n_frames: int, n_atoms: int, max_atoms: int) -> list[int]:
    """Frames per call worth timing for ``n_frames`` of ``n_atoms``: powers of two below
    ``n_frames``, and all of them, up to ``max_atoms`` atoms per call (at least one frame)."""
    chunks = [1 << k for k in range(n_frames.bit_length()) if 1 << k < n_frames] + [n_frames]
    return [c for c in chunks if c == 1 or c * n_atoms <= max_atoms]


class CallPlanner:
    """Frames per model call for each request shape (frames, atoms), chosen by timing the first calls."""

    def __init__(
        self,
        first_atoms: int = 64,
        max_atoms: int = 4096,
        trials: int = 2,
        report: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        """``first_atoms``: atoms per call until a shape is planned (and for shapes seen once);
        ``max_atoms``: the largest call timed (memory grows with it)."""
        if trials < 1:
            raise ValueError(f"trials={trials}: give at least 1")
        self.first_atoms = first_atoms
        self.max_atoms = max_atoms
        self.trials = trials
        self.report = report
        self.clock = clock
        self.plans: dict[tuple[int, int], int] = {}  # (frames, atoms) -> frames per call
        self._schedule: dict[tuple[int, int], list[int]] = {}  # chunks still to time, in order
        self._seconds: dict[tuple[int, int], dict[int, float]] = {}  # fastest time seen per chunk

    def chunk(self, n_frames: int, n_atoms: int) -> int:
        """Frames per call for this request: the plan, or the candidate this call times."""
        key = (n_frames, n_atoms)
        if key in self.plans:
            return self.plans[key]
        chunks = candidate_chunks(n_frames, n_atoms, self.max_atoms)
        if len(chunks) == 1:
            self.plans[key] = chunks[0]
            return chunks[0]
        if key not in self._schedule:
            # the first call pays one-off costs (allocations, lazy set-up): a warm-up, not counted
            first = min(n_frames, max(1, self.first_atoms // n_atoms))
            self._schedule[key] = [first] + chunks * self.trials
            self._seconds[key] = {}
        return self._schedule[key][0]

    def timed(self, n_frames: int, n_atoms: int, evaluate: Callable[[int], object]):
        """``evaluate(chunk)`` with the chunk for this request, timed while the shape is planned."""
        chunk = self.chunk(n_frames, n_atoms)
        key = (n_frames, n_atoms)
        if key in self.plans:
            return evaluate(chunk)
        start = self.clock()
        result = evaluate(chunk)
        self._record(key, chunk, self.clock() - start)
        return result

    def _record(self, key: tuple[int, int], chunk: int, seconds: float) -> None:
        schedule = self._schedule[key]
        warm_up = len(schedule) == len(candidate_chunks(*key, self.max_atoms)) * self.trials + 1
        schedule.pop(0)
        if not warm_up:
            seen = self._seconds[key]
            seen[chunk] = min(seconds, seen.get(chunk, float("inf")))
        if schedule:
            return
        seen = self._seconds.pop(key)
        del self._schedule[key]
        best = min(seen, key=seen.get)
        self.plans[key] = best
        if self.report:
            timings = ", ".join(f"{c}: {1e3 * s:.1f}" for c, s in sorted(seen.items()))
            self.report(
                f"call plan for {key[0]} frames x {key[1]} atoms: {best} frame(s) per model call"
                f" (ms per request by frames per call, fastest of {self.trials}: {timings})"
            )
