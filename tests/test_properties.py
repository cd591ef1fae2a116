"""Property tests: the memory backend and beanstalkd agree on random sequences of operations."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queue_beanstalk import Message, NotFound, QueueFactory, Received, Timeout, factory

# A delay long enough never to end during one example: delayed means "not now".
LATER = 60

Step = tuple[str, int, int]

steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("put"), st.sampled_from([0, 10, 1024, 2**32 - 1]), st.sampled_from([0, LATER])
        ),
        st.tuples(st.just("get"), st.just(0), st.just(0)),
        st.tuples(st.just("delete"), st.integers(0, 7), st.just(0)),
        st.tuples(st.just("release"), st.integers(0, 7), st.sampled_from([0, LATER])),
        st.tuples(st.just("bury"), st.integers(0, 7), st.just(0)),
    ),
    min_size=2,
    max_size=30,
)  # fmt: skip


def _run(queues: QueueFactory, program: list[Step]) -> list[object]:
    """Run ``program`` on a fresh queue and return what each step observed."""
    queue = queues.get(f"prop-{uuid.uuid4().hex[:12]}")
    held: list[Received] = []
    seen: list[object] = []
    for number, (op, a, b) in enumerate(program):
        if op == "put":
            queue.put(Message("step", [str(number)]), delay=b, priority=a)
            seen.append("put")
        elif op == "get":
            try:
                message = queue.get(timeout=0)
            except Timeout:
                seen.append("timeout")
            else:
                held.append(message)
                seen.append(message.args)
        elif not held:
            seen.append("nothing held")
        else:
            message = held[a % len(held)]
            try:
                if op == "delete":
                    queue.delete(message)
                elif op == "release":
                    queue.release(message, delay=b)
                else:
                    queue.bury(message)
                seen.append(op)
            except NotFound:
                seen.append("not found")
    return seen


@pytest.mark.slow
@settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(program=steps)
def test_memory_and_beanstalkd_agree(beanstalkd_url: str, program: list[Step]) -> None:
    with factory("memory://") as memory, factory(beanstalkd_url) as beanstalkd:
        assert _run(memory, program) == _run(beanstalkd, program)
