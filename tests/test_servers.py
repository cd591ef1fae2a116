"""Several beanstalkd servers behind one factory: spread, failover, ids per server, handlers."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import greenstalk
import pytest

from queue_beanstalk import (
    BeanstalkBackend,
    CommandRefused,
    JobRef,
    Message,
    MessageTooBig,
    NotFound,
    PutManyError,
    PutOutcomeUnknown,
    QueueConnectionError,
    QueueFactory,
    ServerError,
    ServersBackend,
    Timeout,
    factory,
)
from queue_beanstalk.testing import BeanstalkdNotFound, BeanstalkdServer, free_port

from .conftest import StartFake
from .support import Reply, eventually, ref

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[BeanstalkdServer]]:
    """Three beanstalkd servers of the test's own, each with a binlog, to kill and restart."""
    started: list[BeanstalkdServer] = []
    try:
        for number in range(3):
            binlog = tmp_path / f"binlog-{number}"
            binlog.mkdir()
            try:
                started.append(BeanstalkdServer(binlog_dir=binlog).start())
            except BeanstalkdNotFound as exc:
                if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                    pytest.fail(f"CI=true and no beanstalkd: {exc}")
                pytest.skip(str(exc))
        yield started
    finally:
        for server in started:
            server.stop()


def url_of(servers: list[BeanstalkdServer]) -> str:
    return "beanstalk://" + ",".join(f"{server.host}:{server.port}" for server in servers)


def address(server: BeanstalkdServer) -> str:
    return f"{server.host}:{server.port}"


def ready_on(server: BeanstalkdServer, tube: str) -> int:
    """Return how many jobs are ready on ``tube`` of ``server``, as another client sees it."""
    assert server.port is not None
    with greenstalk.Client((server.host, server.port)) as client:
        try:
            return int(client.stats_tube(tube)["current-jobs-ready"])
        except greenstalk.NotFoundError:
            return 0


def first_puts_first(queues: QueueFactory) -> None:
    """Make the next put go to the first server listed (it starts at a random one)."""
    backend = queues.backend
    assert isinstance(backend, ServersBackend)
    backend._put_turn = itertools.count(0)


def restart(server: BeanstalkdServer) -> None:
    """Start a killed server again on its port, with its binlog."""
    server.start()


# Configuration


def test_a_list_of_servers_makes_a_servers_backend() -> None:
    with factory("beanstalk://a.example:11301,b.example,[::1]:11302") as queues:
        backend = queues.backend
        assert isinstance(backend, ServersBackend)
        assert backend.addresses == ["a.example:11301", "b.example:11300", "[::1]:11302"]
        assert "a.example:11301, b.example:11300" in repr(backend)


def test_one_server_is_the_one_server_backend() -> None:
    with factory("beanstalk://a.example:11301") as queues:
        assert isinstance(queues.backend, BeanstalkBackend)


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("beanstalk://a:11300,b,a", "server a:11300 is listed twice"),
        ("beanstalk://a,A:11300", "server a:11300 is listed twice"),
        ("beanstalk://a,,b", "an empty server"),
        ("beanstalk://a,b:0", "port must be 1-65535"),
        ("beanstalk://a,b:x", "bad port"),
        ("beanstalk://a,b?uncertain_puts=maybe", "uncertain_puts must be one of resend, raise"),
    ],
)
def test_a_bad_list_of_servers_says_what_is_wrong(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        factory(url)


def test_options_in_the_query_apply_to_every_server() -> None:
    with factory("beanstalk://a,b?timeout=3&retry_for=1") as queues:
        backend = queues.backend
        assert isinstance(backend, ServersBackend)
        for server in backend._servers:
            assert server.backend._timeout == 3
            assert server.backend._retry_for == 0  # retried over every server instead
        assert backend._retry_for == 1


# Puts


def test_puts_spread_round_robin_and_messages_name_their_server(
    servers: list[BeanstalkdServer], tube: str
) -> None:
    with factory(url_of(servers)) as queues:
        messages = [Message("spread", [str(n)]) for n in range(30)]
        for message in messages:
            queues.get(tube).put(message)
    assert [ready_on(server, tube) for server in servers] == [10, 10, 10]
    assert Counter(message.server for message in messages) == {
        address(server): 10 for server in servers
    }
    assert f"server='{messages[0].server}'" in repr(messages[0])


def test_put_many_keeps_a_batch_on_one_server_in_order(
    servers: list[BeanstalkdServer], tube: str
) -> None:
    with factory(url_of(servers)) as queues:
        queue = queues.get(tube)
        messages = [Message("batch", [str(n)]) for n in range(50)]
        ids = queue.put_many(messages)
        assert len({message.server for message in messages}) == 1
        assert ids == sorted(ids)
        got = [queue.get(timeout=5) for _ in messages]
        assert [message.args for message in got] == [message.args for message in messages]
        for message in got:
            queue.delete(message)


def test_with_one_server_down_every_put_succeeds_and_the_loss_is_logged_once(
    servers: list[BeanstalkdServer], tube: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "queue_beanstalk")
    dead = servers[1]
    with factory(url_of(servers)) as queues:
        queue = queues.get(tube)
        queue.put(Message("warm"))  # connects to the first
        dead.kill()
        messages = [Message("failover", [str(n)]) for n in range(30)]
        for message in messages:
            queue.put(message)
        assert address(dead) not in {message.server for message in messages}
        assert queue.put_many([Message("many")] * 5)
    downs = [r for r in caplog.records if "is down" in r.getMessage()]
    assert len(downs) == 1
    assert address(dead) in downs[0].getMessage()


def test_a_server_back_takes_puts_again_and_its_return_is_logged_once(
    servers: list[BeanstalkdServer], tube: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "queue_beanstalk")
    dead = servers[2]
    with factory(url_of(servers)) as queues:
        queue = queues.get(tube)
        dead.kill()
        for _ in range(6):
            queue.put(Message("while-down"))
        restart(dead)

        def took_one() -> bool:
            message = Message("after")
            queue.put(message)
            return message.server == address(dead)

        eventually(took_one, timeout=40)
    backs = [r for r in caplog.records if "is back" in r.getMessage()]
    assert len(backs) == 1
    assert address(dead) in backs[0].getMessage()


def test_every_server_down_raises_connection_error(
    servers: list[BeanstalkdServer], tube: str
) -> None:
    with factory(url_of(servers)) as queues:
        for server in servers:
            server.kill()
        queue = queues.get(tube)
        with pytest.raises(QueueConnectionError, match="no server took the put"):
            queue.put(Message("nowhere"))
        with pytest.raises(QueueConnectionError):  # nothing stored: as with one server
            queue.put_many([Message("nowhere")] * 3)
        with pytest.raises(QueueConnectionError, match="no server could be reached"):
            queue.get(timeout=1)


def test_a_draining_server_gets_no_puts_and_is_still_emptied(
    servers: list[BeanstalkdServer], tube: str
) -> None:
    draining = servers[0]
    with factory(url_of(servers)) as queues:
        queue = queues.get(tube)
        for n in range(6):
            queue.put(Message("before", [str(n)]))
        assert ready_on(draining, tube) == 2
        assert draining.pid is not None
        os.kill(draining.pid, signal.SIGUSR1)  # beanstalkd's drain mode
        eventually(lambda: _drains(draining), timeout=5)
        later = [Message("during", [str(n)]) for n in range(12)]
        for message in later:
            queue.put(message)
        assert address(draining) not in {message.server for message in later}
        handled: list[Message] = []
        handler = queues.handler(handled.append, tube, concurrency=2)
        handler.start()
        try:
            eventually(lambda: len(handled) == 18)
        finally:
            handler.stop()
            assert handler.wait(10)
    assert ready_on(draining, tube) == 0


def _drains(server: BeanstalkdServer) -> bool:
    assert server.port is not None
    with greenstalk.Client((server.host, server.port)) as client:
        return client.stats()["draining"] == "true"


# What a put can meet, from scripted servers


@pytest.mark.parametrize("status", [b"DRAINING", b"OUT_OF_MEMORY", b"INTERNAL_ERROR"])
def test_a_refusal_another_server_may_not_make_goes_to_the_next_server(
    fake_beanstalkd: StartFake, server: BeanstalkdServer, tube: str, status: bytes
) -> None:
    fake = fake_beanstalkd({b"put": [Reply(status + b"\r\n")]})
    with factory(f"beanstalk://127.0.0.1:{fake.port},{address(server)}") as queues:
        message = Message("elsewhere")
        queues.get(tube).put(message)
        assert message.server == address(server)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (Reply(b"BAD_FORMAT\r\n"), CommandRefused),
        (Reply(b"EXPECTED_CRLF\r\n"), CommandRefused),
        (Reply(b"JOB_TOO_BIG\r\n"), MessageTooBig),
    ],
)
def test_a_refusal_every_server_would_make_is_raised_not_retried(
    fake_beanstalkd: StartFake,
    server: BeanstalkdServer,
    tube: str,
    reply: Reply,
    error: type[Exception],
) -> None:
    fake = fake_beanstalkd({b"put": [reply]})
    with factory(f"beanstalk://127.0.0.1:{fake.port},{address(server)}") as queues:
        first_puts_first(queues)
        with pytest.raises(error):
            queues.get(tube).put(Message("refused"))
        assert ready_on(server, tube) == 0


def test_a_buried_put_is_stored_not_retried(
    fake_beanstalkd: StartFake, server: BeanstalkdServer, tube: str
) -> None:
    fake = fake_beanstalkd({b"put": [Reply(b"BURIED 7\r\n")]})
    with factory(f"beanstalk://127.0.0.1:{fake.port},{address(server)}") as queues:
        first_puts_first(queues)
        message = Message("buried")
        assert queues.get(tube).put(message) == 7
        assert message.server == f"127.0.0.1:{fake.port}"
        assert ready_on(server, tube) == 0


def test_a_put_sent_and_unanswered_is_resent_elsewhere_by_default(
    fake_beanstalkd: StartFake, server: BeanstalkdServer, tube: str
) -> None:
    fake = fake_beanstalkd({b"put": [Reply(close=True)]})
    with factory(f"beanstalk://127.0.0.1:{fake.port},{address(server)}") as queues:
        first_puts_first(queues)
        message = Message("resent")
        queues.get(tube).put(message)
        assert message.server == address(server)
    assert b"put" in fake.commands


def test_uncertain_puts_raise_says_the_put_may_have_been_stored(
    fake_beanstalkd: StartFake, server: BeanstalkdServer, tube: str
) -> None:
    fake = fake_beanstalkd({b"put": [Reply(close=True)]})
    url = f"beanstalk://127.0.0.1:{fake.port},{address(server)}?uncertain_puts=raise"
    with factory(url) as queues:
        first_puts_first(queues)
        with pytest.raises(PutOutcomeUnknown, match="may have been stored"):
            queues.get(tube).put(Message("unsure"))
        assert ready_on(server, tube) == 0


def test_one_server_says_a_put_sent_and_unanswered_may_have_been_stored(
    fake_beanstalkd: StartFake, tube: str
) -> None:
    fake = fake_beanstalkd({b"put": [Reply(close=True)]})
    with factory(fake.url) as queues, pytest.raises(PutOutcomeUnknown):
        queues.get(tube).put(Message("unsure"))


def test_one_server_with_uncertain_puts_raise_does_not_resend_within_retry_for(
    fake_beanstalkd: StartFake, tube: str
) -> None:
    fake = fake_beanstalkd({b"put": [Reply(close=True), Reply(b"INSERTED 3\r\n")]})
    with (
        factory(fake.url, retry_for=5, uncertain_puts="raise") as queues,
        pytest.raises(PutOutcomeUnknown),
    ):
        queues.get(tube).put(Message("unsure"))
    assert fake.commands.count(b"put") == 1


def test_one_server_resends_an_unanswered_put_within_retry_for(
    fake_beanstalkd: StartFake, tube: str
) -> None:
    fake = fake_beanstalkd({b"put": [Reply(close=True), Reply(b"INSERTED 3\r\n")]})
    with factory(fake.url, retry_for=5) as queues:
        assert queues.get(tube).put(Message("twice")) == 3
    assert fake.commands.count(b"put") == 2


# Ids per server


def test_colliding_ids_are_settled_on_the_right_server(
    servers: list[BeanstalkdServer], tube: str
) -> None:
    first, second = servers[0], servers[1]
    for one in (first, second):  # both hand out job 1
        with factory(one.url) as alone:
            alone.get(tube).put(Message("on", [address(one)]))
    with factory(url_of(servers[:2])) as queues:
        queue = queues.get(tube)
        got = [queue.get(timeout=5), queue.get(timeout=5)]
        assert [message.id for message in got] == [1, 1]
        assert {message.server for message in got} == {address(first), address(second)}
        for message in got:
            assert message.args == (message.server,)
        on_first = next(message for message in got if message.server == address(first))
        queue.delete(on_first)
        with pytest.raises(NotFound):
            queues.backend.stats_job(ref(on_first))
        on_second = ref(next(message for message in got if message is not on_first))
        assert queues.backend.stats_job(on_second).state == "reserved"
        with pytest.raises(NotFound, match="not one of"):
            queues.backend.stats_job(JobRef(1, "elsewhere:11300"))


# Gets and handlers


def test_get_returns_a_message_from_any_server(servers: list[BeanstalkdServer], tube: str) -> None:
    with factory(servers[2].url) as last:
        last.get(tube).put(Message("on-the-last"))
    with factory(url_of(servers)) as queues:
        queue = queues.get(tube)
        got = queue.get(timeout=0)  # a poll asks every server once
        assert (got.action, got.server) == ("on-the-last", address(servers[2]))
        queue.delete(got)
        with pytest.raises(Timeout):
            queue.get(timeout=0)


def test_a_waiting_get_takes_a_message_put_on_any_server_within_about_a_second(
    servers: list[BeanstalkdServer], tube: str
) -> None:
    with factory(url_of(servers)) as queues:
        queue = queues.get(tube)
        for server in servers:
            timer = threading.Timer(0.5, _put_on, (server, tube))
            timer.start()
            started = time.monotonic()
            got = queue.get(timeout=10)
            waited = time.monotonic() - started
            timer.join()
            assert got.server == address(server)
            assert waited < 0.5 + 2.5
            queue.delete(got)


def _put_on(server: BeanstalkdServer, tube: str) -> None:
    with factory(server.url) as alone:
        alone.get(tube).put(Message("late"))


def test_a_get_never_reserves_a_message_it_does_not_return(
    servers: list[BeanstalkdServer], tube: str
) -> None:
    with factory(url_of(servers)) as queues:
        queue = queues.get(tube)
        for _ in range(6):
            queue.put(Message("one-at-a-time"))
        got = queue.get(timeout=1)
        reserved = 0
        for server in servers:
            assert server.port is not None
            with greenstalk.Client((server.host, server.port)) as client:
                stats = client.stats_tube(tube)
                reserved += int(stats["current-jobs-reserved"])
        assert reserved == 1
        queue.delete(got)


def test_a_handler_consumes_every_server_and_each_message_once(
    servers: list[BeanstalkdServer], tube: str
) -> None:
    handled: list[tuple[int | None, str | None]] = []
    lock = threading.Lock()

    def record(message: Message) -> None:
        with lock:
            handled.append((message.id, message.server))

    with factory(url_of(servers)) as queues:
        queue = queues.get(tube)
        for n in range(90):
            queue.put(Message("n", [str(n)]))
        handler = queues.handler(record, tube, concurrency=3)
        handler.start()
        try:
            eventually(lambda: len(handled) >= 90)
        finally:
            handler.stop()
            assert handler.wait(10)
    assert len(handled) == len(set(handled)) == 90
    assert Counter(server for _, server in handled) == {address(server): 30 for server in servers}
    assert [ready_on(server, tube) for server in servers] == [0, 0, 0]


def test_an_idle_handler_starts_a_message_put_on_any_server_within_about_a_second(
    servers: list[BeanstalkdServer], tube: str
) -> None:
    started: dict[str, float] = {}
    arrived = threading.Event()

    def note(message: Message) -> None:
        started[message.args[0]] = time.monotonic()
        arrived.set()

    with factory(url_of(servers)) as queues:
        handler = queues.handler(note, tube)
        handler.start()
        try:
            time.sleep(1.5)  # idle: every server polled and waited on at least once
            for server in servers:
                arrived.clear()
                with factory(server.url) as alone:
                    put_at = time.monotonic()
                    alone.get(tube).put(Message("idle", [address(server)]))
                assert arrived.wait(10)
                assert started[address(server)] - put_at < 2.5, address(server)
        finally:
            handler.stop()
            assert handler.wait(10)


def test_a_handler_goes_on_without_a_server_and_takes_its_messages_when_back(
    servers: list[BeanstalkdServer], tube: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "queue_beanstalk")
    handled: list[str] = []
    lock = threading.Lock()

    def record(message: Message) -> None:
        with lock:
            handled.append(message.args[0])

    dead = servers[0]
    with factory(dead.url) as alone:
        alone.get(tube).put(Message("kept", ["in-binlog"]))
    with factory(url_of(servers)) as queues:
        dead.kill()
        handler = queues.handler(record, tube, concurrency=2)
        handler.start()
        try:
            queue = queues.get(tube)
            for n in range(20):
                queue.put(Message("n", [str(n)]))
            eventually(lambda: len(handled) == 20, timeout=15)
            assert "in-binlog" not in handled
            restart(dead)
            eventually(lambda: "in-binlog" in handled, timeout=40)
        finally:
            handler.stop()
            assert handler.wait(10)
    downs = [r for r in caplog.records if "is down" in r.getMessage()]
    backs = [r for r in caplog.records if "is back" in r.getMessage()]
    assert len(downs) == 1
    assert len(backs) == 1


@pytest.mark.slow
def test_a_server_killed_and_restarted_under_producers_and_a_handler_loses_nothing(
    servers: list[BeanstalkdServer], tube: str, record_property: Callable[[str, object], None]
) -> None:
    acknowledged: set[tuple[str, ...]] = set()
    handled: Counter[tuple[str, ...]] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def produce(number: int) -> None:
        with factory(url_of(servers)) as producer:
            queue = producer.get(tube)
            sequence = 0
            while not stop.is_set():
                args = (str(number), str(sequence))
                try:
                    queue.put(Message("work", list(args)))
                except QueueConnectionError:
                    continue  # not acknowledged: not counted
                with lock:
                    acknowledged.add(args)
                sequence += 1
                time.sleep(0.002)

    def record(message: Message) -> None:
        with lock:
            handled[message.args] += 1

    with factory(url_of(servers)) as queues:
        handler = queues.handler(record, tube, concurrency=3)
        handler.start()
        producers = [threading.Thread(target=produce, args=(n,)) for n in range(2)]
        for thread in producers:
            thread.start()
        try:
            time.sleep(1)
            servers[1].kill()
            time.sleep(1.5)
            restart(servers[1])
            time.sleep(1)
        finally:
            stop.set()
            for thread in producers:
                thread.join(10)
        try:
            eventually(lambda: acknowledged <= set(handled), timeout=60)
        finally:
            handler.stop()
            assert handler.wait(10)
    lost = acknowledged - set(handled)
    duplicates = sum(count - 1 for count in handled.values() if count > 1)
    assert not lost, f"{len(lost)} acknowledged messages never handled"
    # Reported with the test (JUnit XML; the log with -rA): at-least-once allows duplicates.
    record_property("acknowledged", len(acknowledged))
    record_property("handled more than once", duplicates)
    logging.getLogger(__name__).warning(
        "%d acknowledged, %d handled more than once", len(acknowledged), duplicates
    )


def test_free_port_is_not_a_server(tube: str) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    with (
        factory(f"beanstalk://{nowhere},127.0.0.1:{free_port()}") as queues,
        pytest.raises(QueueConnectionError, match="no server took the put"),
    ):
        queues.get(tube).put(Message("x"))


def test_put_many_sends_what_one_server_refused_on_to_the_next(
    fake_beanstalkd: StartFake, server: BeanstalkdServer, tube: str
) -> None:
    replies = [Reply(b"INSERTED 5\r\n"), Reply(b"DRAINING\r\n"), Reply(b"INSERTED 6\r\n")]
    fake = fake_beanstalkd({b"put": replies})
    fake_address = f"127.0.0.1:{fake.port}"
    with factory(f"beanstalk://{fake_address},{address(server)}") as queues:
        first_puts_first(queues)
        messages = [Message("m", [str(n)]) for n in range(3)]
        ids = queues.get(tube).put_many(messages)
        assert [message.server for message in messages] == [
            fake_address,
            address(server),
            fake_address,
        ]
        assert (ids[0], ids[2]) == (5, 6)
    assert ready_on(server, tube) == 1


def test_put_many_says_which_messages_no_server_took(fake_beanstalkd: StartFake, tube: str) -> None:
    first = fake_beanstalkd({b"put": [Reply(b"INSERTED 5\r\n"), Reply(b"BAD_FORMAT\r\n")]})
    second = fake_beanstalkd({})
    second.stop()  # nobody listens there any more
    url = f"beanstalk://127.0.0.1:{first.port},127.0.0.1:{second.port}"
    with factory(url) as queues, pytest.raises(PutManyError) as caught:
        queues.get(tube).put_many([Message("a"), Message("b")])
    assert caught.value.ids == [5, None]
    assert isinstance(caught.value.errors[1], CommandRefused)


def test_stop_is_prompt_for_a_handler_waiting_on_every_server(
    servers: list[BeanstalkdServer], tube: str
) -> None:
    with factory(url_of(servers)) as queues:
        handler = queues.handler(lambda message: None, tube, concurrency=3)
        handler.start()
        eventually(lambda: _watching(servers, tube) == 3 * len(servers), timeout=10)
        started = time.monotonic()
        handler.stop()
        assert handler.wait(5)
        assert time.monotonic() - started < 2


def _watching(servers: list[BeanstalkdServer], tube: str) -> int:
    """Return how many connections watch ``tube`` over every server."""
    total = 0
    for server in servers:
        assert server.port is not None
        with (
            greenstalk.Client((server.host, server.port)) as client,
            contextlib.suppress(greenstalk.NotFoundError),
        ):
            total += int(client.stats_tube(tube)["current-watching"])
    return total


def test_the_worker_command_takes_a_list_of_servers(
    servers: list[BeanstalkdServer], tube: str, tmp_path: Path
) -> None:
    (tmp_path / "server_tasks.py").write_text(
        "import pathlib\n"
        "LOG = pathlib.Path(__file__).with_name('calls.log')\n"
        "def note(message):\n"
        "    with LOG.open('a') as log:\n"
        "        log.write(f'{message.server} {message.args[0]}\\n')\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with factory(url_of(servers)) as queues:
        for n in range(6):
            queues.get(tube).put(Message("n", [str(n)]))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "queue_beanstalk",
            "worker",
            "server_tasks:note",
            "--queue",
            tube,
            "--url",
            url_of(servers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = tmp_path / "calls.log"
    try:
        eventually(lambda: log.exists() and len(log.read_text().splitlines()) == 6)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr
    lines = log.read_text().splitlines()
    assert {line.split()[0] for line in lines} == {address(server) for server in servers}


def test_when_every_server_drains_a_put_says_so(fake_beanstalkd: StartFake, tube: str) -> None:
    draining = [Reply(b"DRAINING\r\n")] * 4
    first, second = fake_beanstalkd({b"put": draining}), fake_beanstalkd({b"put": draining})
    url = f"beanstalk://127.0.0.1:{first.port},127.0.0.1:{second.port}"
    with factory(url) as queues:
        for _ in range(2):  # the second time, both are known to drain
            with pytest.raises(ServerError, match="draining") as caught:
                queues.get(tube).put(Message("nowhere"))
            assert caught.value.reply == "DRAINING"


def test_a_batch_that_fails_as_one_counts_one_failure_of_its_server(
    fake_beanstalkd: StartFake, server: BeanstalkdServer, tube: str
) -> None:
    dead = fake_beanstalkd({})
    dead.stop()  # nobody listens there: the whole batch fails at the connect
    with factory(f"beanstalk://127.0.0.1:{dead.port},{address(server)}") as queues:
        first_puts_first(queues)
        backend = queues.backend
        assert isinstance(backend, ServersBackend)
        # Straight to the backend: Queue.put_many would first ask every server's limit.
        stored = backend.put_many(tube, [b"m"] * 5, priority=0, delay=0, ttr=60)
        assert {job.server for job in stored} == {address(server)}
        assert [one.failures for one in backend._servers] == [1, 0]
