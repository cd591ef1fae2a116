"""Rows of figures, one value per round, and what is read off them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the ``fraction`` (0..1) percentile of ``values``, nearest rank."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Row:
    """One figure measured once per round, e.g. Queue.put in messages/s.

    :param key: how targets and other rows refer to it, e.g. ``"put.queue"``.
    :param section: the table section it is printed under.
    :param label: what was measured.
    :param unit: ``"msg/s"``, ``"ms"`` or ``"MB"``.
    :param short: how a ratio names this row when it is the baseline.
    :param baselines: keys of rows this one is compared with, round by round.
    :param note: printed instead of figures when there are no samples.
    """

    key: str
    section: str
    label: str
    unit: str
    short: str = ""
    baselines: tuple[str, ...] = ()
    samples: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)


class Results:
    """The rows of one placement, in the order they were declared."""

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        #: Section to a paragraph printed after its table (Markdown only).
        self.notes: dict[str, str] = {}

    def row(
        self,
        key: str,
        section: str,
        label: str,
        unit: str,
        *,
        short: str = "",
        baselines: tuple[str, ...] = (),
    ) -> Row:
        """Return the row ``key``, declaring it on first use."""
        existing = self.rows.get(key)
        if existing is not None:
            return existing
        row = Row(key, section, label, unit, short or label, baselines)
        self.rows[key] = row
        return row

    def add(self, key: str, value: float) -> None:
        """Record one round's value of a declared row."""
        self.rows[key].samples.append(value)

    def ratios(self, key: str, baseline: str) -> list[float]:
        """Return ``key / baseline`` round by round; empty when either row is missing.

        Rounds pair up the two figures measured back to back, so a slow moment
        of the shared machine hits both sides of a ratio alike. Rounds whose
        baseline is 0 (a CPU time under one clock tick) are left out.
        """
        row, base = self.rows.get(key), self.rows.get(baseline)
        if row is None or base is None:
            return []
        pairs = zip(row.samples, base.samples, strict=False)
        return [value / reference for value, reference in pairs if reference]

    def ratio(self, key: str, baseline: str) -> float | None:
        """Return the median over rounds of ``key / baseline`` (:meth:`ratios`), or None."""
        ratios = self.ratios(key, baseline)
        return statistics.median(ratios) if ratios else None
