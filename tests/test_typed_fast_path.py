"""Contents read from the log become typed objects without pydantic when validation
would convert nothing (chatledger/client/_convert.py, docs/performance.md): the object
must be exactly the one ``model_validate`` makes, and every other shape must still be
validated (and a bad one refused)."""

from __future__ import annotations

import gc
from typing import Any

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatledger.client._convert import _plain_content, content_from_wire, history_from_wire
from chatledger.errors import IntegrityError
from chatledger.projections.history import HistoryState, TurnSpan
from chatledger.types import Content, ModelContent, Part, UserContent

CLASSES: list[type[Content]] = [Content, UserContent, ModelContent]


def same_object(fast: pydantic.BaseModel, checked: pydantic.BaseModel) -> None:
    """Everything pydantic keeps on an instance, compared, recursively through parts."""
    assert type(fast) is type(checked)
    assert fast.__pydantic_fields_set__ == checked.__pydantic_fields_set__
    assert fast.__pydantic_extra__ == checked.__pydantic_extra__
    assert fast.__pydantic_private__ == checked.__pydantic_private__
    assert fast.__dict__.keys() == checked.__dict__.keys()
    for name, value in checked.__dict__.items():
        other = fast.__dict__[name]
        if isinstance(value, list):
            assert isinstance(other, list) and len(other) == len(value)
            for a, b in zip(other, value, strict=True):
                same_object(a, b)
        else:
            assert type(other) is type(value) and other == value
    assert fast == checked
    assert fast.model_dump(mode="json", by_alias=True, exclude_unset=True) == checked.model_dump(
        mode="json", by_alias=True, exclude_unset=True
    )


text_parts = st.lists(
    st.fixed_dictionaries({"text": st.text()}, optional={"thought": st.booleans()}),
    min_size=0,
    max_size=4,
)


@given(role=st.sampled_from(["user", "model"]), parts=text_parts)
def test_text_contents_are_the_objects_pydantic_makes(
    role: str, parts: list[dict[str, Any]]
) -> None:
    wire = {"role": role, "parts": parts}
    for cls in CLASSES:
        fast = _plain_content(wire, cls)
        if cls is not Content and role != ("user" if cls is UserContent else "model"):
            assert fast is None  # a UserContent with role model is refused by pydantic
            continue
        assert fast is not None
        same_object(fast, cls.model_validate(wire))
        same_object(content_from_wire(wire, cls), cls.model_validate(wire))


@pytest.mark.parametrize(
    "wire",
    [
        {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}]},
        {"role": "user", "parts": [{"text": "a", "thoughtSignature": "c2ln"}]},
        {"role": "user", "parts": [{"text": "a", "newServerField": {"x": 1}}]},
        {"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "AAEC"}}]},
        {"parts": [{"text": "no role"}]},
        {"role": "user", "parts": [{}]},
        {"role": "user", "parts": [{"text": "a"}], "extra": 1},
        {"role": "user", "parts": [{"thought": 1}]},
    ],
)
def test_other_shapes_are_validated(wire: dict[str, Any]) -> None:
    assert _plain_content(wire, Content) is None
    same_object(content_from_wire(wire), Content.model_validate(wire))


def test_a_bad_content_is_still_refused() -> None:
    with pytest.raises(IntegrityError, match="not a valid Content"):
        content_from_wire({"role": "user", "parts": [{"text": 3}]})
    with pytest.raises(IntegrityError, match="not a valid Content"):
        content_from_wire({"role": "user", "parts": "text"})


def test_objects_are_copies() -> None:
    wire = {"role": "user", "parts": [{"text": "hello"}]}
    first, second = content_from_wire(wire), content_from_wire(wire)
    assert first == second and first is not second
    assert first.parts is not None and second.parts is not None
    first.parts[0].text = "changed"
    assert second.parts[0].text == "hello" and wire["parts"][0] == {"text": "hello"}
    assert isinstance(first.parts[0], Part)


def reference_history(history: HistoryState, which: str) -> list[Content]:
    """What ``history_from_wire`` returns, built by pydantic: the class of each content as
    google-genai's (a sent message: UserContent, or ModelContent for a model role)."""
    contents = getattr(history, which)
    result: list[Content] = []
    offset = full_offset = 0
    for span in history.turns:
        count = getattr(span, which)
        message = history.full[full_offset] if span.full and not span.loaded else None
        for index, content in enumerate(contents[offset : offset + count]):
            cls: type[Content] = Content
            if index == 0 and message is not None and content == message:
                cls = ModelContent if content.get("role") == "model" else UserContent
            result.append(cls.model_validate(content))
        offset += count
        full_offset += span.full
    return result


contents_st = st.one_of(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "model"]), "parts": text_parts}
    ),  # the usual shapes, one text part or not
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "model"]), "parts": st.just([{"text": "x"}])}
    ),
    st.just({"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}]}),
    st.just({"role": "user", "parts": [{"text": "a", "thoughtSignature": "c2ln"}]}),
    st.just({"role": "user", "parts": [{"text": "a", "newServerField": {"x": 1}}]}),
    st.just({"role": "user", "parts": [{"text": "a"}], "extra": None}),
    st.just({"parts": [{"text": "no role"}]}),
)


@given(
    turns=st.lists(
        st.tuples(st.lists(contents_st, min_size=1, max_size=3), st.booleans()),
        max_size=6,
    )
)
def test_histories_are_the_objects_pydantic_makes(turns: list[tuple[list[Any], bool]]) -> None:
    history = HistoryState()
    for number, (contents, loaded) in enumerate(turns, start=1):
        # A sent message is a user content (or a model one: a function call sent).
        history.full.extend(contents)
        history.context.extend(contents)
        history.curated.extend(contents)
        count = len(contents)
        history.turns.append(TurnSpan(number, count, count, count, number, loaded))
    for which in ("full", "context", "curated"):
        expected = reference_history(history, which)
        got = history_from_wire(history, which)
        assert len(got) == len(expected)
        for fast, checked in zip(got, expected, strict=True):
            same_object(fast, checked)
    # Every call builds new objects.
    again = history_from_wire(history, "full")
    for first, second in zip(history_from_wire(history, "full"), again, strict=True):
        assert first is not second
        assert all(a is not b for a, b in zip(first.parts or [], second.parts or [], strict=True))


def test_a_message_whose_role_its_class_refuses_is_still_refused() -> None:
    history = HistoryState(
        full=[{"role": "function", "parts": [{"text": "x"}]}],
        turns=[TurnSpan(1, 1, 0, 0, 1, False)],
    )
    with pytest.raises(IntegrityError, match="not a valid Content"):
        history_from_wire(history, "full")


def test_the_garbage_collector_is_left_as_it_was() -> None:
    good = HistoryState(
        full=[{"role": "user", "parts": [{"text": "x"}]}], turns=[TurnSpan(1, 1, 1, 1, 1, False)]
    )
    bad = HistoryState(
        full=[{"role": "user", "parts": [{"text": 3}]}], turns=[TurnSpan(1, 1, 1, 1, 1, False)]
    )
    was = gc.isenabled()
    try:
        gc.enable()
        assert len(history_from_wire(good, "full")) == 1
        assert gc.isenabled()
        with pytest.raises(IntegrityError):
            history_from_wire(bad, "full")
        assert gc.isenabled()  # paused during the build only, an error included
        gc.disable()
        assert len(history_from_wire(good, "full")) == 1
        assert not gc.isenabled()  # never turned on by it
    finally:
        if was:
            gc.enable()
        else:
            gc.disable()
