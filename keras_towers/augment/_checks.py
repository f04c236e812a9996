"""Argument checks shared by the augmentation configs (clear errors)."""

from __future__ import annotations


def probability(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = None
    if value is None or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"`{name}` must be a probability in [0, 1]. Received: {value!r}."
        )
    return value


def non_negative(value, name: str, maximum: float | None = None) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = None
    if value is None or value < 0 or (maximum is not None and value > maximum):
        bound = f"in [0, {maximum}]" if maximum is not None else ">= 0"
        raise ValueError(f"`{name}` must be a number {bound}. Received: {value!r}.")
    return value


def positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {value!r}.")
    return value


def value_range(
    value, name: str, low: float = 0.0, high: float | None = None
) -> tuple[float, float]:
    """A `(lo, hi)` pair with `low < lo <= hi (<= high)`."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        lo = hi = None
    upper = "" if high is None else f" <= {high}"
    if lo is None or not (low < lo <= hi) or (high is not None and hi > high):
        raise ValueError(
            f"`{name}` must be a pair (lo, hi) with {low} < lo <= hi{upper}. "
            f"Received: {value!r}."
        )
    return (lo, hi)
