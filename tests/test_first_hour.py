"""The worker command and the API as a new user meets them (issue 12): each finding, fixed."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from queue_beanstalk import JobRef, Message, NotFound, QueueFactory, Received, cli, factory
from queue_beanstalk.testing import BeanstalkdServer, free_port
from queue_beanstalk.worker_command import TargetError, resolve

from .support import eventually, ref

TASKS = """
import pathlib
import time

LOG = pathlib.Path(__file__).with_name("calls.log")

def handle(message):
    with LOG.open("a") as log:
        log.write(f"{message.action} {message.id}\\n")

async def handle_async(message):
    pass

def hang(message):
    with LOG.open("a") as log:
        log.write(f"hanging {message.id}\\n")
    time.sleep(600)

not_a_function = 42
"""

COMMAND = Path(sys.executable).with_name("queue-beanstalk")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory holding ``tasks.py``, as a user's project would."""
    (tmp_path / "tasks.py").write_text(textwrap.dedent(TASKS))
    return tmp_path


@pytest.fixture
def queues(beanstalkd_url: str) -> Iterator[QueueFactory]:
    with factory(beanstalkd_url) as made:
        yield made


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QUEUE_BEANSTALK_URL")}
    return {**env, **extra}


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(COMMAND), *args],
        cwd=cwd,
        env=env if env is not None else _environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _handles_one_message(
    process: subprocess.Popen[str], queues: QueueFactory, tube: str, log: Path
) -> None:
    message = Message("hello")
    queues.get(tube).put(message)
    try:
        eventually(lambda: log.exists() and f"hello {message.id}" in log.read_text())
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == cli.EXIT_OK, stderr


# 1. The current directory is on the import path, and --path adds others.


def test_the_worker_imports_from_the_current_directory(
    project: Path, queues: QueueFactory, beanstalkd_url: str, tube: str
) -> None:
    process = _run("worker", "tasks:handle", "--queue", tube, "--url", beanstalkd_url, cwd=project)
    _handles_one_message(process, queues, tube, project / "calls.log")


def test_path_adds_a_directory_to_the_import_path(
    project: Path,
    queues: QueueFactory,
    beanstalkd_url: str,
    tube: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    process = _run(
        "worker", "tasks:handle", "--queue", tube, "--url", beanstalkd_url,
        "--path", str(project), cwd=elsewhere,
    )  # fmt: skip
    _handles_one_message(process, queues, tube, project / "calls.log")


# 2. An async def handler is refused, at handler() and in the command.


async def _coroutine_function(message: Message) -> None:
    pass


class _AsyncCallable:
    async def __call__(self, message: Message) -> None:
        pass


@pytest.mark.parametrize(
    "func",
    [_coroutine_function, _AsyncCallable(), functools.partial(_coroutine_function)],
    ids=["async-def", "async-call", "partial"],
)
def test_handler_refuses_an_async_function(func: object) -> None:
    with factory("memory://") as queues, pytest.raises(TypeError, match="async"):
        queues.handler(func, "jobs")  # type: ignore[arg-type]


def test_the_worker_refuses_an_async_function(project: Path, beanstalkd_url: str) -> None:
    process = _run(
        "worker", "tasks:handle_async", "--queue", "jobs", "--url", beanstalkd_url, cwd=project
    )
    _, stderr = process.communicate(timeout=15)
    assert process.returncode == cli.EXIT_NOT_CALLABLE
    assert "async" in stderr
    assert "Traceback" not in stderr


# 3. Unordered arguments are refused.


@pytest.mark.parametrize(
    "args",
    [{"w": "800"}, {"a", "b"}, frozenset({"a"}), {"w": "800"}.keys(), {"w": "800"}.items()],
    ids=["dict", "set", "frozenset", "keys", "items"],
)
def test_unordered_args_are_refused(args: object) -> None:
    with pytest.raises(TypeError, match="ordered"):
        Message("resize", args)  # type: ignore[arg-type]


# 8. The worker waits for a server that is not up yet.


def test_the_worker_waits_for_a_server_that_is_not_up_yet(
    project: Path, tube: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    port = free_port()
    url = f"beanstalk://127.0.0.1:{port}"
    process = _run("worker", "tasks:handle", "--queue", tube, "--url", url, cwd=project)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        while "waiting for it" not in line:
            assert line, "the worker ended instead of waiting"
            line = process.stderr.readline()
        with BeanstalkdServer(port) as server, factory(server.url) as queues:
            _handles_one_message(process, queues, tube, project / "calls.log")
    finally:
        process.kill()
        process.communicate()


# 9. First-run rough edges.


def test_a_bad_url_in_the_environment_is_a_clean_usage_error(project: Path) -> None:
    process = _run(
        "worker", "tasks:handle", "--queue", "jobs",
        cwd=project, env=_environment(QUEUE_BEANSTALK_URL="bogus"),
    )  # fmt: skip
    _, stderr = process.communicate(timeout=15)
    assert process.returncode == cli.EXIT_USAGE
    assert "QUEUE_BEANSTALK_URL" in stderr
    assert "Traceback" not in stderr


def test_a_bad_queue_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["worker", "tasks:handle", "--queue", "bad name", "--url", "memory://"])
    assert code == cli.EXIT_USAGE
    assert "bad name" in capsys.readouterr().err


def test_a_dot_instead_of_a_colon_suggests_the_colon() -> None:
    with pytest.raises(TargetError, match="did you mean 'tasks:handle'"):
        resolve("tasks.handle")


def test_what_is_not_callable_is_named_plainly(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(project))
    with pytest.raises(TargetError, match="'tasks:not_a_function' is not callable: it is an int"):
        resolve("tasks:not_a_function")


def test_stats_and_kick_of_an_unknown_job_say_so_without_reservations(
    queues: QueueFactory,
) -> None:
    message = Message("y")
    queues.get("jobs").put(message)
    assert message.server is not None
    missing = JobRef(10**9, message.server)
    with pytest.raises(NotFound) as caught:
        queues.backend.stats_job(missing)
    assert "reserved" not in str(caught.value)
    assert str(10**9) in str(caught.value)
    with pytest.raises(NotFound) as caught:
        queues.backend.kick_job(missing)
    assert "reserved" not in str(caught.value)


# 5. A stop that waits for a hanging callback is bounded.


def test_stop_timeout_exits_and_gives_the_message_back(
    project: Path, queues: QueueFactory, beanstalkd_url: str, tube: str
) -> None:
    message = Message("hang")
    queues.get(tube).put(message)
    process = _run(
        "worker", "tasks:hang", "--queue", tube, "--url", beanstalkd_url,
        "--stop-timeout", "1", cwd=project,
    )  # fmt: skip
    log = project / "calls.log"
    try:
        eventually(lambda: log.exists() and f"hanging {message.id}" in log.read_text())
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    finally:
        process.kill()
    assert process.returncode == cli.EXIT_STOP_TIMEOUT, stderr
    assert "--stop-timeout" in stderr
    eventually(lambda: queues.backend.stats_job(ref(message)).state == "ready", timeout=5)


@pytest.mark.parametrize("option", ["--stop-timeout", "--time-limit"])
@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_time_option_must_be_seconds_above_zero(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["worker", "tasks:handle", "--queue", "q", "--url", "memory://", option, value])
    assert code == cli.EXIT_USAGE
    assert option in capsys.readouterr().err


# 9. A message got has an id: typed so (make lint runs mypy --strict on this file).


def test_a_message_got_is_typed_with_its_id_server_and_queue() -> None:
    handled: list[int] = []

    def handle(message: Received) -> None:  # a handler's function may say so too
        handled.append(message.id)

    with factory("memory://") as queues:
        queue = queues.get("jobs")
        queue.put(Message("x"))
        got = queue.get(timeout=0)
        job_id: int = got.id
        server: str = got.server
        name: str = got.queue
        assert isinstance(got, Received)
        assert (job_id, server, name) == (1, queues.backend.server, "jobs")  # type: ignore[attr-defined]
        queue.delete(got)
        queue.put(Message("y"))
        handler = queues.handler(handle, "jobs")
        handler.start()
        eventually(lambda: handled == [2])
        handler.stop()
        assert handler.wait(5)
