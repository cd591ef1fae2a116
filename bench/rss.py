"""Memory: a handler process's RSS over many messages, and the memory backend's cost per message.

Each measure runs in a child process of its own (``python -m bench.rss ...``),
which reads its own VmRSS from /proc/self/status and prints JSON; the parent
only fills the tube and reads the answer.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from queue_beanstalk import Message, factory

__all__ = ["handler_rss", "memory_backend_rss", "rss_kib"]

#: The repository root, from which ``python -m bench.rss`` finds the package.
ROOT = Path(__file__).resolve().parent.parent


def rss_kib() -> int:
    """Return this process's resident set size in KiB, after a garbage collection."""
    gc.collect()
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def handler_rss(url: str, tube: str, *, warmup: int, count: int) -> dict[str, float]:
    """Run a one-worker handler on ``warmup + count`` waiting messages in a child process.

    :returns: ``start_kib`` (before the handler starts), ``before_kib`` (after
        ``warmup`` messages), ``after_kib`` (after ``count`` more) and ``seconds``
        (for the ``count``).
    """
    return _child("handler", url, tube, str(warmup), str(count))


def memory_backend_rss(count: int) -> dict[str, float]:
    """Put ``count`` messages into a ``memory://`` queue in a child process.

    :returns: ``before_kib`` and ``after_kib`` around the puts.
    """
    return _child("memory", str(count))


def _child(*args: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.rss", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.rss {args[0]} failed ({done.returncode}): {done.stderr.strip()}")
    answer: dict[str, float] = json.loads(done.stdout)
    return answer


def _handler_child(url: str, tube: str, warmup: int, count: int) -> dict[str, float]:
    marks: dict[str, float] = {}
    counter = itertools.count(1)
    finished = threading.Event()

    def handle(message: Message) -> None:
        number = next(counter)
        if number == warmup:
            marks["before_kib"] = rss_kib()
            marks["started"] = time.perf_counter()
        elif number == warmup + count:
            marks["seconds"] = time.perf_counter() - marks.pop("started")
            marks["after_kib"] = rss_kib()
            finished.set()

    queues = factory(url)
    handler = queues.handler(handle, tube, concurrency=1)
    marks["start_kib"] = rss_kib()
    handler.start()
    try:
        if not finished.wait(600):
            raise RuntimeError("the handler did not finish within 600 s")
    finally:
        handler.stop()
        handler.wait(30)
        queues.close()
    return marks


def _memory_child(count: int) -> dict[str, float]:
    with factory("memory://") as queues:
        queue = queues.get("bench")
        queue.put(Message("warm-up"))
        queue.delete(queue.get(0))
        before = rss_kib()
        for number in range(count):
            queue.put(Message("bench", [f"{number:08d}"]))
        after = rss_kib()
    return {"before_kib": before, "after_kib": after}


def main() -> int:
    """Run one measure and print its JSON (the child side)."""
    parser = argparse.ArgumentParser(prog="python -m bench.rss")
    commands = parser.add_subparsers(dest="command", required=True)
    handler = commands.add_parser("handler")
    handler.add_argument("url")
    handler.add_argument("tube")
    handler.add_argument("warmup", type=int)
    handler.add_argument("count", type=int)
    memory = commands.add_parser("memory")
    memory.add_argument("count", type=int)
    args = parser.parse_args()
    if args.command == "handler":
        result = _handler_child(args.url, args.tube, args.warmup, args.count)
    else:
        result = _memory_child(args.count)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
