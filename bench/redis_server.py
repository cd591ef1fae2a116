"""A Redis of the benchmark's own: a free loopback port, nothing saved, stopped by its PID.

The peers section needs one; it is started only when a peer that uses it is
installed, and :meth:`RedisServer.command` speaks just enough of the protocol
(inline commands, one reply) for the section to flush it and read its counters.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from types import TracebackType

from queue_beanstalk.testing import free_port

from .placement import pin_process

__all__ = ["RedisNotFound", "RedisServer"]

#: Seconds a redis-server may take to answer PING after it is started.
START_TIMEOUT = 10.0


class RedisNotFound(RuntimeError):
    """No ``redis-server`` on the PATH (``bash bench/peers_setup.sh`` installs one)."""


class RedisServer:
    """A ``redis-server`` child process on a loopback port, without persistence.

    :param cpus: the CPUs to pin it to once it answers (with every thread it started).
    """

    host = "127.0.0.1"

    def __init__(self, cpus: frozenset[int]) -> None:
        self.cpus = cpus
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://host:port/0``, as every peer's client takes it."""
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server and return once it answers PING.

        :raises RedisNotFound: when there is no ``redis-server``.
        :raises RuntimeError: when it exits or does not answer in time.
        """
        program = shutil.which("redis-server")
        if program is None:
            raise RedisNotFound("redis-server not found: bash bench/peers_setup.sh installs it")
        self.port = free_port(self.host)
        self._process = subprocess.Popen(
            # No RDB snapshots, no append-only file: beanstalkd runs without a binlog too.
            [
                *(program, "--port", str(self.port), "--bind", self.host),
                *("--save", "", "--appendonly", "no", "--logfile", ""),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                if self.command("PING") == b"PONG":
                    break
            except OSError:
                pass
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer within {START_TIMEOUT:g} s")
            time.sleep(0.02)
        pin_process(self.cpus, self._process.pid)
        return self

    def stop(self) -> None:
        """Stop the server by its PID: SIGTERM, then SIGKILL after 10 s."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def command(self, *words: str) -> bytes:
        """Send one inline command on a connection of its own; return its reply's payload.

        :raises RuntimeError: for an error reply.
        """
        with socket.create_connection((self.host, self.port), timeout=10) as sock:
            sock.sendall(" ".join(words).encode("ascii") + b"\r\n")
            with sock.makefile("rb") as reader:
                line = reader.readline().rstrip(b"\r\n")
                kind, rest = line[:1], line[1:]
                if kind == b"-":
                    raise RuntimeError(f"redis {words[0]}: {rest.decode(errors='replace')}")
                if kind == b"$":
                    size = int(rest)
                    return b"" if size < 0 else reader.read(size + 2)[:-2]
                return rest

    def commands_done(self) -> int:
        """Return the commands the server has run, those run by Lua scripts included.

        The sum of ``calls`` over ``INFO commandstats``; this INFO is counted by the next.
        """
        total = 0
        for line in self.command("INFO", "commandstats").decode("ascii").splitlines():
            if line.startswith("cmdstat_"):
                total += int(line.split("calls=", 1)[1].split(",", 1)[0])
        return total

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
