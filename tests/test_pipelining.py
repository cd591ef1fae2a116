"""put_many and the handler's pipelined delete+reserve keep every guarantee of the contract."""

from __future__ import annotations

import greenstalk
import pytest

from queue_beanstalk import (
    Message,
    PutManyError,
    QueueConnectionError,
    ServerError,
    factory,
)

from .conftest import StartFake
from .support import Reply, eventually


def test_a_refused_put_in_a_batch_is_named_and_the_rest_stored(
    fake_beanstalkd: StartFake,
) -> None:
    server = fake_beanstalkd(
        {b"put": [Reply(b"INSERTED 1\r\n"), Reply(b"DRAINING\r\n"), Reply(b"INSERTED 3\r\n")]}
    )
    messages = [Message("a"), Message("b"), Message("c")]
    with factory(server.url, timeout=2) as queues, pytest.raises(PutManyError) as caught:
        queues.get("q").put_many(messages)
    assert caught.value.ids == [1, None, 3]
    assert isinstance(caught.value.errors[1], ServerError)
    assert [message.id for message in messages] == [1, None, 3]
    assert "1 of 3 messages not stored" in str(caught.value)


def test_a_connection_lost_mid_batch_names_what_may_not_be_stored(
    fake_beanstalkd: StartFake,
) -> None:
    server = fake_beanstalkd({b"put": [Reply(b"INSERTED 1\r\n"), Reply(close=True)]})
    with factory(server.url, timeout=2) as queues, pytest.raises(PutManyError) as caught:
        queues.get("q").put_many([Message("a"), Message("b"), Message("c")])
    assert caught.value.ids == [1, None, None]
    assert sorted(caught.value.errors) == [1, 2]
    assert all(isinstance(e, QueueConnectionError) for e in caught.value.errors.values())


def test_the_handler_deletes_and_reserves_in_one_round_trip(beanstalkd_url: str, tube: str) -> None:
    host, port = beanstalkd_url.removeprefix("beanstalk://").split(":")
    handled: list[Message] = []
    with factory(beanstalkd_url) as queues:
        queues.get(tube).put_many([Message("n") for _ in range(50)])
        handler = queues.handler(handled.append, tube)
        with greenstalk.Client((host, int(port))) as observer:
            before = observer.stats()
            handler.start()
            try:
                eventually(lambda: len(handled) == 50)
                eventually(lambda: observer.stats_tube(tube)["current-jobs-reserved"] == 0)
            finally:
                handler.stop()
                assert handler.wait(10)
            after = observer.stats()
    # Every delete went out in the same write as the next reserve: the server saw
    # them all, and no more reserves than messages plus the last, idle one.
    assert after["cmd-delete"] - before["cmd-delete"] == 50
    assert after["cmd-reserve-with-timeout"] - before["cmd-reserve-with-timeout"] <= 52
