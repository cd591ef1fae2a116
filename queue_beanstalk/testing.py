"""A throwaway beanstalkd for tests and demos: free loopback port, ready when returned.

    with BeanstalkdServer() as server:
        queues = factory(server.url)

Only the process this module started is ever stopped, by its PID.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from types import TracebackType

__all__ = ["BeanstalkdNotFound", "BeanstalkdServer", "free_port"]


class BeanstalkdNotFound(RuntimeError):
    """No ``beanstalkd`` binary on the PATH (``apt-get install beanstalkd`` provides one)."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class BeanstalkdServer:
    """A beanstalkd child process on a loopback port.

    :param port: the port to listen on; a free one when None. Give the port of
        a stopped server to restart "the same" server.
    :param binlog_dir: a directory for beanstalkd's write-ahead log (``-b``), so
        jobs survive a restart; None keeps jobs in memory only.
    :param max_job_size: beanstalkd's ``-z``, in bytes; its default when None.
    :param binary: the beanstalkd executable.
    :param ready_timeout: seconds to wait for the server to accept connections.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        binlog_dir: str | os.PathLike[str] | None = None,
        max_job_size: int | None = None,
        binary: str = "beanstalkd",
        ready_timeout: float = 10.0,
    ) -> None:
        path = shutil.which(binary)
        if path is None:
            raise BeanstalkdNotFound(
                f"{binary!r} is not on the PATH; install it with 'apt-get install beanstalkd'"
            )
        self.host = "127.0.0.1"
        self.port = port
        self._binary = path
        self._binlog_dir = binlog_dir
        self._max_job_size = max_job_size
        self._ready_timeout = ready_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``beanstalk://`` URL of the server."""
        return f"beanstalk://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self._process is None else self._process.pid

    def start(self) -> BeanstalkdServer:
        """Start the server and return once it accepts connections.

        A port picked by :func:`free_port` can be taken by someone else before
        beanstalkd binds it; then another free port is tried.

        :raises RuntimeError: when the server exits or does not accept in time.
        """
        if self._process is not None:
            raise RuntimeError("beanstalkd is already running")
        attempts = 1 if self.port is not None else 5
        for _ in range(attempts):
            port = self.port if self.port is not None else free_port(self.host)
            args = [self._binary, "-l", self.host, "-p", str(port)]
            if self._binlog_dir is not None:
                args += ["-b", os.fspath(self._binlog_dir)]
            if self._max_job_size is not None:
                args += ["-z", str(self._max_job_size)]
            process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            if self._wait_ready(process, port):
                self._process = process
                self.port = port
                return self
        raise RuntimeError(f"beanstalkd did not start: {self._last_error}")

    def _wait_ready(self, process: subprocess.Popen[bytes], port: int) -> bool:
        """Return True once ``process`` accepts on ``port``; else end it and return False."""
        ready = False
        try:
            ready = self._poll_until_accepting(process, port)
        finally:
            if not ready:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                if process.stderr:
                    process.stderr.close()
        return ready

    def _poll_until_accepting(self, process: subprocess.Popen[bytes], port: int) -> bool:
        deadline = time.monotonic() + self._ready_timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, port), timeout=1.0):
                    return True
            except OSError:
                pass
            try:
                # Both the pause between attempts and the check that it is still alive.
                process.wait(timeout=0.01)
            except subprocess.TimeoutExpired:
                continue
            stderr = process.stderr.read() if process.stderr else b""
            self._last_error = stderr.decode(errors="replace").strip() or "it exited"
            return False
        self._last_error = f"it did not accept connections within {self._ready_timeout}s"
        return False

    _last_error = ""

    def stop(self) -> None:
        """Stop the server gracefully (SIGTERM) and wait for it."""
        self._end(kill=False)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        self._end(kill=True)

    def _end(self, *, kill: bool) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()

    def __enter__(self) -> BeanstalkdServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"queue_beanstalk.testing.BeanstalkdServer(port={self.port}, pid={self.pid})"
