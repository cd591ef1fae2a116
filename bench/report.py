"""The tables printed to stdout and the BENCHMARKS.md written from them."""

from __future__ import annotations

import operator
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .cases import PREFETCH
from .stats import Results, Row

__all__ = [
    "TARGETS",
    "Assessment",
    "Target",
    "assess",
    "floor",
    "markdown",
    "round_trip",
    "text",
]


@dataclass(frozen=True)
class Target:
    """A figure the library aims for; missing one is reported, never an error.

    :param text: the target, as the issue states it.
    :param key: the row measured.
    :param baseline: the row it is a ratio of, or None for the row's own values.
    :param op: ``">="``, ``"<="`` or ``"<"``.
    :param bound: the ratio (or the value, without a baseline) to meet; None for a
        figure that is reported beside the targets but not aimed for.
    :param floor: the row of a minimal client doing the same work (see
        :mod:`bench.minimal`), held to the same baseline; None where there is none.
    """

    text: str
    key: str
    baseline: str | None
    op: str
    bound: float | None
    floor: str | None = None


TARGETS = (
    Target(
        f"Handler c=1, prefetch={PREFETCH} >= 3x raw reserve/delete loop",
        "handler1.prefetch",
        "handler1.raw",
        ">=",
        3.0,
        "handler1.minimal_prefetch",
    ),
    Target(
        f"Handler c=1, prefetch={PREFETCH} >= 0.6x pipelined socket, batches of {PREFETCH}",
        "handler1.prefetch",
        "handler1.pipelined",
        ">=",
        0.6,
        "handler1.minimal_prefetch",
    ),
    Target(
        "Handler c=1 >= 1.5x raw reserve/delete loop",
        "handler1.queue",
        "handler1.raw",
        ">=",
        1.5,
        "handler1.minimal",
    ),
    Target(
        "Queue.put >= 1.05x greenstalk + json.dumps",
        "put.queue",
        "put.json",
        ">=",
        1.05,
        "put.minimal",
    ),
    Target(
        "Queue.get+delete >= 1.05x greenstalk + json.loads",
        "get.queue",
        "get.json",
        ">=",
        1.05,
        "get.minimal",
    ),
    Target(
        "Queue.get+delete >= 0.9x raw reserve+delete",
        "get.queue",
        "get.raw",
        ">=",
        0.9,
        "get.minimal",
    ),
    Target(
        "Queue.put / raw greenstalk put (reported)",
        "put.queue",
        "put.raw",
        ">=",
        None,
        "put.minimal",
    ),
    Target(
        "Queue.put_many >= 0.8x raw pipelined socket",
        "batch.put_many",
        "batch.pipelined",
        ">=",
        0.8,
    ),
    Target("Queue.put_many / raw put loop (reported)", "batch.put_many", "batch.loop", ">=", None),
    Target("sleeping 10 ms: Handler c=16 >= 12x c=1", "sleep.c16", "sleep.c1", ">=", 12.0),
    Target(
        "p99 put-to-callback <= 1.5x raw p99",
        "latency.queue.p99",
        "latency.raw.p99",
        "<=",
        1.5,
    ),
    Target("handler RSS growth < 5 MB over the run", "rss.growth", None, "<", 5.0),
)

_COMPARE: Mapping[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "<": operator.lt,
}
#: The rows whose median is the machine's round-trip rate, the first measured.
ROUND_TRIP_ROWS = ("put.raw", "batch.loop")


@dataclass(frozen=True)
class Assessment:
    """How one target fared in one placement.

    :param values: the figure round by round (a ratio, or the row's own value).
    :param unit: ``"x"`` for a ratio, else the row's unit.
    """

    target: Target
    values: list[float]
    unit: str

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def worst(self) -> float:
        """The round furthest from meeting the target."""
        return min(self.values) if self.target.op == ">=" else max(self.values)

    def margin(self, value: float) -> float:
        """Return how far ``value`` clears the bound, as a fraction of it (negative: short)."""
        bound = self.target.bound
        if bound is None:
            raise ValueError("a reported figure has no bound")
        beyond = (value - bound) / bound
        return beyond if self.target.op == ">=" else -beyond

    def meets(self, value: float) -> bool:
        """Whether ``value`` meets the target."""
        bound = self.target.bound
        return bound is not None and _COMPARE[self.target.op](value, bound)

    def cells(self) -> list[str]:
        """Return threshold, median, worst round, margin (median / worst) and met, as text."""
        show = self._show
        if self.target.bound is None:
            return ["-", show(self.median), show(self.worst), "-", "reported, no target"]
        met = sum(self.meets(value) for value in self.values)
        return [
            f"{self.target.op} {show(self.target.bound)}",
            show(self.median),
            show(self.worst),
            f"{self.margin(self.median):+.0%} / {self.margin(self.worst):+.0%}",
            f"{'yes' if self.meets(self.median) else 'NO'} ({met} of {len(self.values)} rounds)",
        ]

    def _show(self, value: float) -> str:
        if self.unit == "x":
            return f"{value:.2f}x"
        return f"{_number(value, self.unit)} {self.unit}"


def assess(target: Target, results: Results) -> Assessment | str:
    """Return how ``target`` fared in ``results``, or why it was not measured."""
    row = results.rows.get(target.key)
    if row is None:
        return "not measured in this run"
    if not row.samples:
        return row.note or "not measured"
    if target.baseline is None:
        return Assessment(target, list(row.samples), row.unit)
    ratios = results.ratios(target.key, target.baseline)
    if not ratios:
        base = results.rows.get(target.baseline)
        return (base.note if base is not None else "") or "no baseline"
    return Assessment(target, ratios, "x")


def floor(target: Target, results: Results) -> str:
    """Return the median ratio a minimal client reaches against the target's baseline, as text.

    It says whether that ratio meets the threshold: one it misses is above what
    a minimal Python client reaches in the same rounds.
    """
    if target.floor is None or target.baseline is None:
        return "-"
    ratio = results.ratio(target.floor, target.baseline)
    if ratio is None:
        row = results.rows.get(target.floor)
        return (row.note if row is not None else "") or "not measured"
    shown = f"minimal {ratio:.2f}x"
    if target.bound is None:
        return shown
    return f"{shown}, {'meets' if _COMPARE[target.op](ratio, target.bound) else 'misses'}"


def round_trip(results: Results) -> str:
    """Return the machine's round-trip rate: the raw greenstalk put loop, as a sentence."""
    for key in ROUND_TRIP_ROWS:
        row = results.rows.get(key)
        if row is not None and row.samples:
            return (
                f"raw greenstalk put loop {row.median:,.0f} msg/s median "
                f"({row.low:,.0f}-{row.high:,.0f} over the rounds), "
                f"{1e6 / row.median:.0f} µs a put: each one-at-a-time figure moves with it"
            )
    return "not measured (neither put_get nor batch_put ran)"


_TARGET_COLUMNS = ("target", "threshold", "floor", "median", "worst round", "margin", "met")
#: Widths of the plain-text columns between the target and "met", right-aligned.
_TARGET_WIDTHS = (13, 22, 13, 13, 13)


def text(placements: Sequence[tuple[str, Results]], header: Mapping[str, str]) -> str:
    """Return the plain-text report: every placement's table, then the targets."""
    lines = [f"{label}: {value}" for label, value in header.items()]
    for title, results in placements:
        lines += ["", f"== placement {title} =="]
        lines.append(f"{'':56}{'min':>10}{'median':>10}{'max':>10}  {'unit':6} ratio")
        section = None
        for row in results.rows.values():
            if row.section != section:
                section = row.section
                lines.append(section)
            figures = _figures(row)
            lines.append(
                f"  {row.label:54}" + ("".join(f"{f:>10}" for f in figures[:3]) if figures else "")
            )
            if figures:
                lines[-1] += f"  {row.unit:6} {_ratios(row, results)}".rstrip()
            else:
                lines[-1] = f"  {row.label:54}{row.note}"
    for title, results in placements:
        lines += ["", f"== targets, {title.split(':')[0]} (figures, not tests) =="]
        lines.append(f"  round trip: {round_trip(results)}")
        width = max(len(target.text) for target in TARGETS) + 2
        columns = _TARGET_COLUMNS[1:-1]
        head = "".join(
            f" {column:>{size}}" for column, size in zip(columns, _TARGET_WIDTHS, strict=True)
        )
        lines.append(f"  {'':{width}}{head}  met")
        for target in TARGETS:
            cells = _target_cells(target, results)
            if isinstance(cells, str):
                lines.append(f"  {target.text:{width}}{cells}")
                continue
            shown = "".join(
                f" {cell:>{size}}" for cell, size in zip(cells[:-1], _TARGET_WIDTHS, strict=True)
            )
            lines.append(f"  {target.text:{width}}{shown}  {cells[-1]}")
    return "\n".join(lines)


def markdown(
    placements: Sequence[tuple[str, Results]],
    machine: Mapping[str, str],
    *,
    command: str,
) -> str:
    """Return BENCHMARKS.md.

    :param machine: label to text, for the machine table (versions, sizes, load).
    :param command: the command that reruns the benchmark and rewrites the file.
    """
    out = [
        "# Benchmarks",
        "",
        f"Written by `{command}`; rerun it to refresh this file. The figures are "
        "measurements on a shared, noisy machine, not tests: the run exits 0 whether "
        "or not a target is met.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {label} | {value} |" for label, value in machine.items()),
        f"| placements | {'; '.join(title for title, _ in placements)} |",
        "",
        "## Targets",
        "",
        "A target's figure is a ratio measured round by round, its two sides back to "
        "back (the RSS one is a value); *median* and *worst round* are over the rounds, "
        "*margin* is how far each clears the threshold (negative: short of it), and *met* "
        "judges the median and counts the rounds that met it. *floor* is the median "
        "ratio a minimal client reaches against the same baseline, in the same rounds and "
        "taking turns like the other sides: the least Python that does the same work on one "
        "socket (`bench/minimal.py`); where it *misses*, the threshold is above what a "
        "Python client reaches on this machine. The machine's round trip, above each "
        "table, moves every one-at-a-time figure and the ratios less so.",
    ]
    for title, results in placements:
        out += [
            "",
            f"### {title}",
            "",
            f"Round trip: {round_trip(results)}.",
            "",
            "| " + " | ".join(_TARGET_COLUMNS) + " |",
            "|---|---|--:|--:|--:|--:|---|",
        ]
        for target in TARGETS:
            cells = _target_cells(target, results)
            if isinstance(cells, str):
                cells = [cells, *[""] * (len(_TARGET_COLUMNS) - 2)]
            out.append(f"| {target.text} | " + " | ".join(cells) + " |")
    for title, results in placements:
        out += ["", f"## Placement {title}"]
        section = None
        for row in results.rows.values():
            if row.section != section:
                out += _note(results, section)
                section = row.section
                out += [
                    "",
                    f"**{section}**",
                    "",
                    "| | min | median | max | unit | ratio |",
                    "|---|--:|--:|--:|---|---|",
                ]
            figures = _figures(row)
            if figures:
                cells = [*figures, row.unit, _ratios(row, results)]
            else:
                cells = [row.note, "", "", "", ""]
            out.append(f"| {row.label} | " + " | ".join(cells) + " |")
        out += _note(results, section)
    out += ["", "## Method", "", *METHOD, ""]
    return "\n".join(out)


METHOD = [
    "- Two beanstalkds per placement, started by the benchmark on free loopback ports "
    "(`queue_beanstalk.testing.BeanstalkdServer`) and stopped by their PIDs; the second "
    "serves the several-servers section only. *split* pins both to CPU 0 and every "
    "thread of the benchmark to CPU 1; *same* pins all of them to CPU 1, so the servers' "
    "work and the client's share one CPU.",
    "- Every figure is measured once per round and shown as min/median/max over the rounds. "
    "Within a round the raw baseline and the library run back to back, in alternating order "
    "from round to round; single puts and get+delete go further and take turns in 20 slices "
    "a round. A ratio is the median over rounds of library / baseline, so a slow moment of "
    "the machine hits both sides alike.",
    '- Bodies are the library\'s own JSON (`{"action":"bench","args":["00000001"]}`), '
    "so the raw loops move the same bytes; the library's figures include encoding and "
    "decoding. Raw loops use `greenstalk.Client(..., encoding=None)`, one command and one "
    "reply at a time. The pipelined socket formats a batch of `put` commands into one "
    "buffer, sends it with one `sendall`, then reads the `INSERTED` lines.",
    "- Handler throughput: the tube is filled first (untimed), then the clock runs from "
    "`Handler.start()` to the start of the last callback (its delete, one round trip later, "
    "is not counted; the tube is checked empty afterwards). The raw side is `c` threads, "
    "each a `reserve(0)`+`delete` loop on its own client, timed to the last delete.",
    "- Latency: one message at a time, the consumer idle in `reserve` (1 ms pause after "
    "each arrival); from just before the put to the start of the callback (Handler, put "
    "with `Queue.put`) or to `reserve` returning in a thread (raw, put with greenstalk); "
    "20 warm-up messages are not counted.",
    "- Several servers: a second beanstalkd, pinned with the first (in *split* both share "
    "CPU 0, so the two servers together have one CPU, as one server has). Each round and "
    "handler concurrency, each side fills a tube of its own with `Queue.put_many` "
    "(batches of the batch size: one server, or two through "
    "`beanstalk://host:port1,host:port2`, whose batches go to the servers in turn), then a "
    "Handler with a no-op function drains it; the sides alternate from round to round. "
    "Around each step the servers' CPU (utime + stime in `/proc/<pid>/stat`, clock ticks) "
    "and the benchmark's (`time.process_time`, every thread) are read; the CPU figures are "
    "totals over every round, as a tick is 10 ms. A ceiling is 10^6 / µs per message: "
    "the rate one fully used CPU would allow.",
    "- Beside the raw loops, put and get+delete take turns with what a greenstalk user "
    "writes to send the library's messages: the client's default UTF-8 text, "
    '`json.dumps({"action": ..., "args": [...]})` per put; per get `reserve(0)`, '
    "`json.loads` of the body, `delete` (the server's default priority and time-to-run).",
    "- Minimal client (`bench/minimal.py`, the *floor* of the targets): the least Python "
    "that does the library's work, on one blocking socket with TCP_NODELAY, replies read "
    "with `recv` into a buffer. Put: the codec's compact JSON from a `json` encoder, then "
    "`put` with the library's priority and time-to-run, one round trip each. Get+delete: "
    "`reserve-with-timeout 0`, `json.loads`, a `Message`, `delete`: two round trips. "
    "Handler, c=1: each write carries the previous job's `delete` and one "
    "`reserve-with-timeout 1`, each job is decoded and passed to a no-op function: one round "
    f"trip a job. Prefetch: each write carries the previous batch's deletes, one "
    f"`reserve-with-timeout 1` and {PREFETCH - 1} `reserve-with-timeout 0`. They take turns "
    "with the other sides in the same rounds and slices; their connection is opened before "
    "the clock starts, and the handler loops stop it after the last call, as the Handler's.",
    f"- Prefetch: a Handler with `prefetch={PREFETCH}` (one worker) against a pipelined "
    f"socket that sends {PREFETCH} `reserve-with-timeout 0` in one write, reads the "
    f"replies, then sends the {PREFETCH} deletes in the same write as the next "
    f"{PREFETCH} reserves; its clock stops when the last job is read, as the Handler's "
    "stops at the start of its last call.",
    "- Peers (`--peers`, first placement only): a `redis-server` of the benchmark's own "
    "(no persistence), pinned with beanstalkd. Each round and peer, the order alternating, "
    "the benchmark enqueues the jobs one call each (timed), then starts one worker "
    "process as a user would; the drain is timed inside the worker, from the start of the "
    "first job to the start of the last, so start-up (reported apart) is not counted. "
    "Server commands are read from beanstalkd's `cmd-*` stats and Redis's `INFO "
    "commandstats` around each step.",
    "- Memory: in child processes reading their own `VmRSS`; the handler's growth is "
    "measured between its 1,000th message and the end of the run, one worker. The memory "
    "section runs once, in the first placement.",
]


def _target_cells(target: Target, results: Results) -> list[str] | str:
    """Return a target's cells after its text (:data:`_TARGET_COLUMNS`), or why it has none."""
    fared = assess(target, results)
    if isinstance(fared, str):
        return fared
    threshold, *rest = fared.cells()
    return [threshold, floor(target, results), *rest]


def _note(results: Results, section: str | None) -> list[str]:
    note = results.notes.get(section or "")
    return ["", note] if note else []


def _figures(row: Row) -> list[str]:
    if not row.samples:
        return []
    return [_number(value, row.unit) for value in (row.low, row.median, row.high)]


def _ratios(row: Row, results: Results) -> str:
    parts = []
    for baseline in row.baselines:
        ratio = results.ratio(row.key, baseline)
        if ratio is not None:
            parts.append(f"{ratio:.2f}x {results.rows[baseline].short}")
    return ", ".join(parts)


def _number(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.3f}"
    if unit in ("MB", "µs", "s"):
        return f"{value:.2f}"
    if unit == "cmd":
        return f"{value:.1f}"
    if unit == "%":
        return f"{value:.1f}"
    return f"{value:,.0f}"
