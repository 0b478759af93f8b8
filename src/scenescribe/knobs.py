"""Speed knobs read from the environment (README: "Speed knobs"): one parser for all of them.

A knob never changes a record; a value that is not a whole number (or a yes) is ignored, so a
typo falls back to the measured default rather than stopping a long run.
"""

from __future__ import annotations

import os


def env_count(name: str) -> int | None:
    """``name``'s whole number (0 included), or None when unset or not a number."""
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else None


def env_flag(name: str) -> bool:
    """Whether ``name`` is set to 1, true or yes."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")
