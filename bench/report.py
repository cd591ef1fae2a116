"""The tables printed to stdout and the BENCHMARKS.md written from them."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .stats import Results, Row

__all__ = ["TARGETS", "Target", "markdown", "text"]


@dataclass(frozen=True)
class Target:
    """A figure the library aims for; missing one is reported, never an error.

    :param text: the target, as the issue states it.
    :param key: the row measured.
    :param baseline: the row it is a ratio of, or None for the row's own median.
    :param op: ``">="``, ``"<="`` or ``"<"``.
    :param bound: the ratio (or the value, without a baseline) to meet.
    """

    text: str
    key: str
    baseline: str | None
    op: str
    bound: float


TARGETS = (
    Target("Queue.put >= 0.9x raw greenstalk put", "put.queue", "put.raw", ">=", 0.9),
    Target("Queue.get+delete >= 0.9x raw reserve+delete", "get.queue", "get.raw", ">=", 0.9),
    Target(
        "Handler c=1 >= 1.5x raw reserve/delete loop", "handler1.queue", "handler1.raw", ">=", 1.5
    ),
    Target("Queue.put_many >= 5x raw put loop", "batch.put_many", "batch.loop", ">=", 5.0),
    Target(
        "Queue.put_many >= 0.5x raw pipelined socket",
        "batch.put_many",
        "batch.pipelined",
        ">=",
        0.5,
    ),
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


def evaluate(target: Target, results: Results) -> tuple[str, str]:
    """Return the figure a target is judged on, as text, and "met", "MISSED" or why neither."""
    row = results.rows.get(target.key)
    if row is None:
        return "-", "measured once, in the first placement"
    if not row.samples:
        return "-", row.note or "not measured"
    if target.baseline is None:
        value, shown = row.median, _number(row.median, row.unit) + f" {row.unit}"
    else:
        ratio = results.ratio(target.key, target.baseline)
        if ratio is None:
            return "-", results.rows[target.baseline].note or "no baseline"
        value, shown = ratio, f"{ratio:.2f}x"
    return shown, "met" if _COMPARE[target.op](value, target.bound) else "MISSED"


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
    lines += ["", "== targets (figures, not tests) =="]
    for target in TARGETS:
        cells = []
        for title, results in placements:
            shown, status = evaluate(target, results)
            cells.append(f"{title.split(':')[0]}: {shown} {status}")
        lines.append(f"  {target.text:46}" + "   ".join(cells))
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
    names = [title.split(":")[0] for title, _ in placements]
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
        "| target | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for target in TARGETS:
        cells = []
        for _, results in placements:
            shown, status = evaluate(target, results)
            cells.append(f"{shown} {status}" if shown != "-" else status)
        out.append(f"| {target.text} | " + " | ".join(cells) + " |")
    for title, results in placements:
        out += ["", f"## Placement {title}"]
        section = None
        for row in results.rows.values():
            if row.section != section:
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
    "- Memory: in child processes reading their own `VmRSS`; the handler's growth is "
    "measured between its 1,000th message and the end of the run, one worker. The memory "
    "section runs once, in the first placement.",
]


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
    if unit in ("MB", "µs"):
        return f"{value:.2f}"
    if unit == "%":
        return f"{value:.1f}"
    return f"{value:,.0f}"
