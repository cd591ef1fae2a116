"""Message: what it stores, how it compares, what it refuses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from queue_beanstalk import Message, factory


def test_action_and_args_are_stored() -> None:
    message = Message("regenerate-apprc", ["myapp", "other"])
    assert message.action == "regenerate-apprc"
    assert message.args == ("myapp", "other")


def test_args_default_to_an_empty_tuple() -> None:
    assert Message("ping").args == ()


def test_args_become_a_tuple_whatever_the_iterable() -> None:
    def generate() -> Iterator[str]:
        yield "a"
        yield "b"

    assert Message("x", ["a", "b"]).args == ("a", "b")
    assert Message("x", ("a", "b")).args == ("a", "b")
    assert Message("x", generate()).args == ("a", "b")
    assert isinstance(Message("x", ["a"]).args, tuple)


def test_args_are_copied_not_shared() -> None:
    args = ["a"]
    message = Message("x", args)
    args.append("b")
    assert message.args == ("a",)


def test_equal_action_and_args_make_equal_messages() -> None:
    assert Message("x", ["a"]) == Message("x", ("a",))
    assert hash(Message("x", ["a"])) == hash(Message("x", ("a",)))
    assert Message("x") == Message("x", [])
    assert len({Message("x", ["a"]), Message("x", ("a",))}) == 1


@pytest.mark.parametrize(
    "other",
    [Message("y", ["a"]), Message("x", ["b"]), Message("x"), Message("x", ["a", "a"])],
    ids=["action", "arg", "no-args", "more-args"],
)
def test_different_action_or_args_make_different_messages(other: Message) -> None:
    assert Message("x", ["a"]) != other


def test_a_message_is_not_equal_to_other_types() -> None:
    message = Message("x", ["a"])
    assert message != "x"
    assert message != ("x", ("a",))
    assert message.__eq__("x") is NotImplemented


def test_id_and_queue_take_no_part_in_equality() -> None:
    with factory("memory://") as queues:
        sent = Message("x", ["a"])
        queues.get("jobs").put(sent)
        got = queues.get("other").put(Message("x", ["a"]))
        assert sent.id is not None
        assert sent.id != got
        assert sent == Message("x", ["a"])
        assert hash(sent) == hash(Message("x", ["a"]))


def test_a_new_message_has_no_id_and_no_queue() -> None:
    message = Message("x")
    assert message.id is None
    assert message.queue is None


def test_id_and_queue_are_read_only() -> None:
    message = Message("x")
    with pytest.raises(AttributeError):
        message.id = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        message.queue = "jobs"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        message.action = "y"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        message.args = ("a",)  # type: ignore[misc]
    assert message.id is None
    assert message.queue is None
    assert message.action == "x"
    assert message.args == ()


@pytest.mark.parametrize("action", [None, 1, b"x", ["x"]], ids=repr)
def test_a_non_str_action_is_refused(action: object) -> None:
    with pytest.raises(TypeError, match="action must be a str"):
        Message(action)  # type: ignore[arg-type]


def test_an_empty_action_is_refused() -> None:
    with pytest.raises(ValueError, match="action must not be empty"):
        Message("")


@pytest.mark.parametrize("args", [[1], ["a", None], ["a", b"b"]], ids=repr)
def test_a_non_str_arg_is_refused(args: list[object]) -> None:
    with pytest.raises(TypeError, match=r"args\[\d\] must be a str"):
        Message("x", args)  # type: ignore[arg-type]


@pytest.mark.parametrize("args", ["ab", b"ab", bytearray(b"ab"), ""], ids=repr)
def test_args_given_as_one_string_are_refused(args: object) -> None:
    with pytest.raises(TypeError, match="not a single string"):
        Message("x", args)  # type: ignore[arg-type]


def test_repr_names_the_package() -> None:
    text = repr(Message("regenerate-apprc", ["myapp"]))
    assert text.startswith("queue_beanstalk.Message(")
    assert "'regenerate-apprc'" in text
    assert "'myapp'" in text
