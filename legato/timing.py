"""Durations as people read them in the logs of long jobs (training, labelling)."""


def duration_text(seconds: float) -> str:
    """``45 s``, ``12 min`` or ``3.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def time_to_go(elapsed: float, done: int, left: int) -> str:
    """``12 min to go``: the mean time per finished item so far (s) times the items left."""
    return f"{duration_text(elapsed / done * left)} to go"
