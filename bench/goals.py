"""Goals of the benches: each ratio printed beside its goal, and a non-zero exit if one is missed.

A bench is not a test (machines are shared and noisy), but a model or code change that
loses a goal must not pass unnoticed: ``Goals.finish()`` ends the run with exit status 1
and one line per missed goal.
"""

import sys


class Goals:
    def __init__(self):
        self.missed: list[str] = []

    def check(self, name: str, value: float, goal: float, higher_is_better: bool = True) -> str:
        """Record ``value`` against ``goal``; returns the text to print after the value."""
        met = value >= goal if higher_is_better else value <= goal
        text = f"(goal {'>=' if higher_is_better else '<='} {goal:g}: {'met' if met else 'MISSED'})"
        if not met:
            self.missed.append(f"{name}: {value:.2f}, goal {'>=' if higher_is_better else '<='} {goal:g}")
        return text

    def finish(self) -> None:
        if self.missed:
            print("goals missed:\n  " + "\n  ".join(self.missed), file=sys.stderr)
            sys.exit(1)
        print("all goals met")
