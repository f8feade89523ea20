"""Elapsed times as progress lines print them."""

import time


def hms(seconds: float) -> str:
    """``h:mm:ss`` of a duration in seconds (rounded to the second)."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def clock(started: float) -> str:
    """``[h:mm:ss]`` since ``started`` (``time.time()``, whole seconds elapsed): the prefix of
    progress lines."""
    return f"[{hms(int(time.time() - started))}]"
