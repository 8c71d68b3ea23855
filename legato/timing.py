"""Durations as people read them in the logs of long jobs (training, labelling)."""


def duration_text(seconds: float) -> str:
    """``45 s``, ``12 min`` or ``3.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
