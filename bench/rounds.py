"""Alternating rounds: the one loop of every side-by-side measurement (`tritonize peers`, and the
project's own studies in tritonize.studies).

On a small shared machine the host has slow spells that last seconds, so two runs made seconds apart
can differ by more than what is being compared. The sides of a comparison (servers, setups, replica
counts) therefore take turns: round after round every side runs once, until the rounds or the time
are spent, so a slow spell falls on all of them alike. The order within a round can change from round
to round, so that no side always runs first or always follows the same neighbour.
"""
from __future__ import annotations

import time
from typing import Iterator, Sequence, TypeVar

T = TypeVar("T")

SAME = "same"  # every round in the given order
REVERSED = "reversed"  # the given order, reversed every other round
ROTATED = "rotated"  # round r starts with side r (counting from 1), the others following in their order
ORDERS = (SAME, REVERSED, ROTATED)


def rounds(sides: Sequence[T], count: int | None = None, seconds: float | None = None,
           order: str = SAME) -> Iterator[tuple[int, list[T]]]:
    """(round number from 1, the sides in that round's order), for `count` rounds, or until `seconds`
    have passed (checked after each round, so at least one round runs and the one under way when the
    time runs out finishes)."""
    if (count is None) == (seconds is None):
        raise ValueError(f"expected a count of rounds or seconds, not both or neither; got {count} and {seconds}")
    if order not in ORDERS:
        raise ValueError(f"expected an order among {list(ORDERS)}, got {order!r}")
    sides = list(sides)
    deadline = None if seconds is None else time.monotonic() + seconds
    number = 0
    while count is None or number < count:
        number += 1
        if order == REVERSED and number % 2 == 0:
            yield number, sides[::-1]
        elif order == ROTATED and sides:
            shift = (number - 1) % len(sides)
            yield number, sides[shift:] + sides[:shift]
        else:
            yield number, list(sides)
        if deadline is not None and time.monotonic() >= deadline:
            return
