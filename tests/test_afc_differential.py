"""Automatic function calling: chatledger against google-genai 3.3.0 (docs/chat-api.md#function-calling).

Every scenario runs through google-genai's chat and chatledger's chat against the same
loopback Gemini-protocol server with identical scripted replies (``Differential`` in
``tests/support/differential.py``), and compares the request bodies (function call and
function response parts included), the full histories and google-genai's curated history
with chatledger's context. Each chatledger run is also rebuilt from its SQLite file by a
fresh client and must give identical histories.

Each function call and each response is its own event in chatledger's log
(``function_called``: name, args, call id, index; ``function_responded``: name, response,
error, duration); the tests assert on the log as well.

Where chatledger deliberately differs the test says which rule it is:

- docs/differences.md#unknown-functions: a call to a function that is not among the tools is answered with an
  error response and the loop goes on (google-genai raises ``KeyError``).
- docs/chat-api.md#context: a model function call that is not answered by the next content (budget
  spent) is never sent again (google-genai sends it).
- docs/differences.md#stream-one-turn: a streamed function call step is one model content (google-genai keeps
  one content per chunk).
- The async chat runs the calls of one response concurrently (google-genai: one after
  another).

Differences found by these tests that docs/differences.md lists only as smaller ones are marked
"SMALLER DIFFERENCE" in their test's docstring.
"""

from __future__ import annotations

import asyncio
import enum
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import pydantic
import pytest
from google.genai import types as genai_types

from chatledger.client._functions import declare, run_function
from chatledger.errors import FunctionCallingError
from chatledger.events.kinds import ConversationStarted, FunctionCalled, FunctionResponded
from tests.support.differential import Differential, Run, sse, text_chunk
from tests.support.gemini_server import GeminiServer, text_response

WAIT = 30.0  # a bound on waiting for another thread or task (never a duration assertion)


@pytest.fixture
def diff(gemini_server: GeminiServer, db_path: Path) -> Iterator[Differential]:
    differential = Differential(gemini_server, db_path)
    yield differential
    differential.close()


@pytest.fixture
async def adiff(gemini_server: GeminiServer, db_path: Path) -> AsyncIterator[Differential]:
    differential = Differential(gemini_server, db_path)
    yield differential
    differential.close_resumed()
    await differential.aclose()


# =========================================================================== helpers


def user(*texts: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text} for text in texts]}


def model(*texts: str) -> dict[str, Any]:
    return {"role": "model", "parts": [{"text": text} for text in texts]}


def call_part(name: str, **args: Any) -> dict[str, Any]:
    return {"functionCall": {"name": name, "args": args}}


def calls(*parts: dict[str, Any]) -> dict[str, Any]:
    """A model response (wire) whose content is these function call parts."""
    return text_response(parts=list(parts))


def fc(name: str, **args: Any) -> dict[str, Any]:
    """A function call part in the histories' normal form (snake_case)."""
    return {"function_call": {"name": name, "args": args}}


def fr(name: str, response: dict[str, Any]) -> dict[str, Any]:
    """A function response part in the histories' normal form."""
    return {"function_response": {"name": name, "response": response}}


def wire_fr(name: str, response: dict[str, Any]) -> dict[str, Any]:
    """A function response part as sent (camelCase)."""
    return {"functionResponse": {"name": name, "response": response}}


def assert_same(genai_run: Run, ledger_run: Run) -> None:
    """Requests (function parts included), full history and context are identical."""
    assert ledger_run.paths == genai_run.paths
    assert ledger_run.bodies == genai_run.bodies
    assert ledger_run.full == genai_run.full
    assert ledger_run.context == genai_run.context


def assert_same_but_unanswered_calls(genai_run: Run, ledger_run: Run) -> None:
    """As :func:`assert_same`, except that the context leaves out model contents whose
    function calls nothing answers (docs/chat-api.md#context); google-genai's curated keeps them."""
    assert ledger_run.paths == genai_run.paths
    assert ledger_run.bodies == genai_run.bodies
    assert ledger_run.full == genai_run.full
    assert ledger_run.context == [
        content
        for index, content in enumerate(genai_run.context)
        if not (
            content["role"] == "model"
            and any("function_call" in part for part in content["parts"])
            and (
                index + 1 == len(genai_run.context)
                or not any(
                    "function_response" in part for part in genai_run.context[index + 1]["parts"]
                )
            )
        )
    ]
    assert ledger_run.context != genai_run.context


def function_events(run: Run) -> list[FunctionCalled | FunctionResponded]:
    return [
        record.data
        for record in run.records
        if isinstance(record.data, (FunctionCalled, FunctionResponded))
    ]


def log_summary(run: Run) -> list[tuple[str, str, Any]]:
    """(kind, name, args or response) of each function event, in log order."""
    summary: list[tuple[str, str, Any]] = []
    for data in function_events(run):
        if isinstance(data, FunctionCalled):
            summary.append(("called", data.name, data.args))
        else:
            summary.append(("responded", data.name, data.response))
    return summary


def assert_durations_recorded(run: Run) -> None:
    for data in function_events(run):
        if isinstance(data, FunctionResponded):
            assert isinstance(data.duration_ms, float) and data.duration_ms >= 0


def capture(call: Any) -> Any:
    try:
        return call()
    except Exception as exc:
        return exc


# =========================================================================== tools


def get_weather(city: str) -> dict[str, Any]:
    """The weather in a city.

    Args:
        city: The city's name.
    """
    return {"city": city, "temp_c": 21}


def get_time(city: str, twenty_four_hour: bool = True) -> str:
    """The local time in a city."""
    return "12:00" if twenty_four_hour else "12:00 pm"


def broken_forecast(city: str, days: int = 1) -> dict[str, Any]:
    """A forecast service that is down."""
    raise ConnectionError(f"forecast service unreachable for {city} ({days} days)")


class Point(pydantic.BaseModel):
    """A point on a map."""

    x: int
    y: float = 0.0


def distance(a: Point, b: Point) -> float:
    """Manhattan distance between two points."""
    raise ValueError(f"cannot measure from {a} to {b}")


TWO_ROUNDS_FULL = [
    user("Weather and time in Paris?"),
    {"role": "model", "parts": [fc("get_weather", city="Paris")]},
    {"role": "user", "parts": [fr("get_weather", {"result": {"city": "Paris", "temp_c": 21}})]},
    {"role": "model", "parts": [fc("get_time", city="Paris")]},
    {"role": "user", "parts": [fr("get_time", {"result": "12:00"})]},
    model("21 C and noon in Paris."),
]
TWO_ROUNDS_REPLIES = [
    calls(call_part("get_weather", city="Paris")),
    calls(call_part("get_time", city="Paris")),
    text_response("21 C and noon in Paris."),
]
AFC_TURN_EVENTS = [
    "user_message_added",
    "model_call_started",
    "model_responded",
    "function_called",
    "function_responded",
    "model_call_started",
    "model_responded",
    "function_called",
    "function_responded",
    "model_call_started",
    "model_responded",
]


# =========================================================================== two rounds


def test_two_rounds_of_function_calls_then_text(diff: Differential) -> None:
    def script(chat: Any, t: Any) -> Any:
        return chat.send_message("Weather and time in Paris?").text

    config = {"tools": [get_weather, get_time]}
    g, led = diff.run(TWO_ROUNDS_REPLIES, script, config=config)

    assert g.observed == led.observed == "21 C and noon in Paris."
    assert_same(g, led)
    assert led.full == TWO_ROUNDS_FULL
    assert led.context == TWO_ROUNDS_FULL
    assert led.curated == [user("Weather and time in Paris?"), model("21 C and noon in Paris.")]
    # The third request carried both steps, answers included.
    assert led.contents[2][1:] == [
        {"role": "model", "parts": [call_part("get_weather", city="Paris")]},
        {
            "role": "user",
            "parts": [wire_fr("get_weather", {"result": {"city": "Paris", "temp_c": 21}})],
        },
        {"role": "model", "parts": [call_part("get_time", city="Paris")]},
        {"role": "user", "parts": [wire_fr("get_time", {"result": "12:00"})]},
    ]
    # The log: each call and each response is its own event.
    assert led.events == ["conversation_started", *AFC_TURN_EVENTS]
    assert log_summary(led) == [
        ("called", "get_weather", {"city": "Paris"}),
        ("responded", "get_weather", {"result": {"city": "Paris", "temp_c": 21}}),
        ("called", "get_time", {"city": "Paris"}),
        ("responded", "get_time", {"result": "12:00"}),
    ]
    assert all(data.error is None for data in led.event_data("function_responded"))
    assert_durations_recorded(led)
    responded = led.event_data("model_responded")
    assert [data.ends_turn for data in responded] == [False, False, True]
    # The response that ends the turn is what both return as chat.last.
    assert led.chat.last.text == g.chat.get_history()[-1].parts[0].text


async def test_async_two_rounds_of_function_calls_then_text(adiff: Differential) -> None:
    async def script(chat: Any, t: Any) -> Any:
        return (await chat.send_message("Weather and time in Paris?")).text

    config = {"tools": [get_weather, get_time]}
    g, led = await adiff.arun(TWO_ROUNDS_REPLIES, script, config=config)

    assert g.observed == led.observed == "21 C and noon in Paris."
    assert_same(g, led)
    assert led.full == TWO_ROUNDS_FULL
    assert led.events == ["conversation_started", *AFC_TURN_EVENTS]


# =========================================================================== budget


@pytest.mark.parametrize("maximum", [1, 2])
def test_spent_budget_leaves_the_last_calls_unexecuted(diff: Differential, maximum: int) -> None:
    """When the budget is spent, the calls of the last response are not executed: the
    turn ends on the model's unanswered call, returned to the caller. The next send
    differs (docs/chat-api.md#context): chatledger never sends the unanswered call again; google-genai
    sends it (and the real API would reject the request)."""
    ran: list[str] = []

    def lookup(city: str) -> str:
        """Look a city up."""
        ran.append(city)
        return f"{city} found"

    replies = [
        calls(call_part("lookup", city="Paris")),
        calls(call_part("lookup", city="Oslo")),
        text_response("Never mind then."),
    ]
    # maximum=1: one model call, its call not run; maximum=2: one call run, the second not.
    used = [*replies[:maximum], replies[2]]

    def script(chat: Any, t: Any) -> Any:
        ran.clear()
        first = chat.send_message("Find Paris, then Oslo")
        observed = [
            [call.name for call in first.function_calls or []],
            [call.args for call in first.function_calls or []],
            list(ran),
        ]
        return [observed, chat.send_message("Never mind").text]

    config = {"tools": [lookup], "automatic_function_calling": {"maximum_remote_calls": maximum}}
    g, led = diff.run(used, script, config=config)

    last_city = "Paris" if maximum == 1 else "Oslo"
    expected_ran = [] if maximum == 1 else ["Paris"]
    assert (
        g.observed
        == led.observed
        == [
            [["lookup"], [{"city": last_city}], expected_ran],
            "Never mind then.",
        ]
    )
    assert ran == expected_ran  # (of chatledger's run; google-genai's ran the same, above)
    # The requests of the first turn and both full histories are identical.
    assert led.bodies[:maximum] == g.bodies[:maximum]
    assert led.full == g.full
    unanswered = {"role": "model", "parts": [fc("lookup", city=last_city)]}
    first_turn_end = 2 if maximum == 1 else 4
    assert led.full[first_turn_end - 1] == unanswered
    # The follow-up: google-genai sends the unanswered call, chatledger drops it.
    sent_by_genai = g.contents[-1]
    sent_by_ledger = led.contents[-1]
    unanswered_wire = {"role": "model", "parts": [call_part("lookup", city=last_city)]}
    assert sent_by_genai[first_turn_end - 1] == unanswered_wire
    assert sent_by_ledger == [c for c in sent_by_genai if c != unanswered_wire]
    assert sent_by_ledger[-1] == user("Never mind")
    # The log shows only the calls that ran.
    called = led.event_data("function_called")
    assert [(data.name, data.args) for data in called] == [
        ("lookup", {"city": c}) for c in expected_ran
    ]
    assert len(led.event_data("function_responded")) == len(expected_ran)
    assert [data.ends_turn for data in led.event_data("model_responded")] == [
        *([False] * (maximum - 1)),
        True,
        True,
    ]


def test_maximum_remote_calls_zero_disables_afc(diff: Differential) -> None:
    def script(chat: Any, t: Any) -> Any:
        response = chat.send_message("Weather in Paris?")
        return [call.name for call in response.function_calls or []]

    config = {"tools": [get_weather], "automatic_function_calling": {"maximum_remote_calls": 0}}
    g, led = diff.run([calls(call_part("get_weather", city="Paris"))], script, config=config)

    assert g.observed == led.observed == ["get_weather"]
    assert_same_but_unanswered_calls(g, led)
    assert "function_called" not in led.events


# =========================================================================== errors


def test_a_function_that_raises_answers_with_google_genais_error_text(diff: Differential) -> None:
    """The error response is ``{"error": "Failed to invoke function ..."}`` with exactly
    google-genai's wording: converted arguments (3.0 became 3), the model's arguments,
    the exception text. A pydantic model parameter is built from the model's dict."""

    def script(chat: Any, t: Any) -> Any:
        return chat.send_message("Forecast for Paris, and distance?").text

    replies = [
        calls(
            call_part("broken_forecast", city="Paris", days=3.0),
            call_part("distance", a={"x": 1}, b={"x": 4, "y": 2.5}),
        ),
        text_response("Both tools failed."),
    ]
    g, led = diff.run(replies, script, config={"tools": [broken_forecast, distance]})

    assert g.observed == led.observed == "Both tools failed."
    assert_same(g, led)
    answers = led.contents[1][-1]["parts"]
    forecast_error = (
        "Failed to invoke function broken_forecast with converted arguments "
        "{'city': 'Paris', 'days': 3} from model returned function call argument "
        "{'city': 'Paris', 'days': 3} because of error forecast service unreachable for "
        "Paris (3 days)"
    )
    distance_error = (
        "Failed to invoke function distance with converted arguments "
        "{'a': Point(x=1, y=0.0), 'b': Point(x=4, y=2.5)} from model returned function call "
        "argument {'a': {'x': 1}, 'b': {'x': 4, 'y': 2.5}} because of error cannot measure "
        "from x=1 y=0.0 to x=4 y=2.5"
    )
    assert answers == [
        wire_fr("broken_forecast", {"error": forecast_error}),
        wire_fr("distance", {"error": distance_error}),
    ]
    responded = led.event_data("function_responded")
    assert [(data.name, data.error) for data in responded] == [
        ("broken_forecast", forecast_error),
        ("distance", distance_error),
    ]
    assert [data.response for data in responded] == [
        {"error": forecast_error},
        {"error": distance_error},
    ]


def test_arguments_that_do_not_fit_are_answered_like_google_genai(diff: Differential) -> None:
    """A missing argument (the call raises TypeError), an argument of the wrong type and
    a dict that does not validate as the pydantic model: the same error texts."""

    def script(chat: Any, t: Any) -> Any:
        return chat.send_message("go").text

    replies = [
        calls(
            call_part("get_weather"),
            call_part("get_time", city=7),
            call_part("distance", a={"x": "far"}, b={"x": 1}),
        ),
        text_response("done"),
    ]
    g, led = diff.run(replies, script, config={"tools": [get_weather, get_time, distance]})

    assert_same(g, led)
    errors = [
        part["functionResponse"]["response"]["error"] for part in led.contents[1][-1]["parts"]
    ]
    assert errors[0].startswith(
        "Failed to invoke function get_weather with converted arguments {} from model "
        "returned function call argument {} because of error get_weather() missing 1 "
        "required positional argument: 'city'"
    )
    assert errors[1] == (
        "Failed to parse parameter city for function get_time from function call part "
        "because function call argument value 7 is not compatible with parameter "
        "annotation <class 'str'>."
    )
    assert errors[2].startswith(
        "Failed to parse parameter a for function distance from function call part because "
        "function call argument value {'x': 'far'} is not compatible with parameter "
        "annotation <class 'tests.test_afc_differential.Point'>, due to error 1 validation "
        "error for Point"
    )


def test_unknown_function_names_get_an_error_response_and_the_loop_goes_on(
    diff: Differential,
) -> None:
    """docs/differences.md#unknown-functions: google-genai raises KeyError (after running the known function of
    the same response) and records nothing; chatledger answers the unknown call with an
    error naming it, answers the known one, and goes on."""
    ran: list[str] = []

    def known(city: str) -> str:
        """A known function."""
        ran.append(city)
        return "ok"

    def script(chat: Any, t: Any) -> Any:
        outcome = capture(lambda: chat.send_message("go"))
        return outcome if isinstance(outcome, Exception) else outcome.text

    replies = [
        calls(call_part("known", city="Paris"), call_part("unknown_tool", q="x")),
        text_response("Went on."),
    ]
    g = diff.run_genai(replies[:1], script, config={"tools": [known]})
    led = diff.run_ledger(replies, script, config={"tools": [known]})

    assert isinstance(g.observed, KeyError) and g.observed.args == ("unknown_tool",)
    assert g.full == []
    assert led.observed == "Went on."
    assert led.bodies[0] == g.bodies[0]
    assert ran == ["Paris", "Paris"]
    error = "function 'unknown_tool' is not among this chat's tools; it was not called"
    assert led.contents[1][-1] == {
        "role": "user",
        "parts": [wire_fr("known", {"result": "ok"}), wire_fr("unknown_tool", {"error": error})],
    }
    assert log_summary(led) == [
        ("called", "known", {"city": "Paris"}),
        ("responded", "known", {"result": "ok"}),
        ("called", "unknown_tool", {"q": "x"}),
        ("responded", "unknown_tool", {"error": error}),
    ]
    responded = led.event_data("function_responded")
    assert [data.error for data in responded] == [None, error]


# =========================================================================== AFC off


def test_afc_disabled_returns_the_call_and_the_caller_answers(diff: Differential) -> None:
    ran: list[str] = []

    def tracked_weather(city: str) -> dict[str, Any]:
        """The weather in a city."""
        ran.append(city)
        return {"temp_c": 21}

    def script(chat: Any, t: Any) -> Any:
        response = chat.send_message("Weather in Paris?")
        (call,) = response.function_calls
        answer = t.Part.from_function_response(name=call.name, response={"temp_c": 19})
        return [call.name, call.args, chat.send_message(answer).text]

    replies = [calls(call_part("tracked_weather", city="Paris")), text_response("19 C.")]
    config = {"tools": [tracked_weather], "automatic_function_calling": {"disable": True}}
    g, led = diff.run(replies, script, config=config)

    assert g.observed == led.observed == ["tracked_weather", {"city": "Paris"}, "19 C."]
    assert ran == []
    assert_same(g, led)
    # The function is still declared to the model.
    assert led.bodies[0]["tools"][0]["functionDeclarations"][0]["name"] == "tracked_weather"
    assert led.full == [
        user("Weather in Paris?"),
        {"role": "model", "parts": [fc("tracked_weather", city="Paris")]},
        {"role": "user", "parts": [fr("tracked_weather", {"temp_c": 19})]},
        model("19 C."),
    ]
    assert "function_called" not in led.events
    assert "function_responded" not in led.events


def test_afc_disabled_per_message(diff: Differential) -> None:
    """google-genai uses a per-message config instead of the chat's; chatledger merges
    it (docs/differences.md#merged-config), so the chat's tools stay. Either way AFC is off for the send."""

    def script(chat: Any, t: Any) -> Any:
        response = chat.send_message(
            "Weather in Paris?",
            config={"tools": [get_weather], "automatic_function_calling": {"disable": True}},
        )
        return [call.name for call in response.function_calls or []]

    replies = [calls(call_part("get_weather", city="Paris"))]
    g, led = diff.run(replies, script, config={"tools": [get_weather]})

    assert g.observed == led.observed == ["get_weather"]
    assert_same_but_unanswered_calls(g, led)
    assert "function_called" not in led.events


# =========================================================================== declarations only


def test_declaration_only_tools_are_returned_and_answered_by_the_caller(
    diff: Differential,
) -> None:
    """FunctionDeclaration tools are never called: both calls of the response come back
    to the caller, who answers them with a list of function response Parts."""

    def script(chat: Any, t: Any) -> Any:
        response = chat.send_message("Look up x and y")
        answers = [
            t.Part.from_function_response(name=call.name, response={"found": call.args["q"]})
            for call in response.function_calls
        ]
        return [[call.name for call in response.function_calls], chat.send_message(answers).text]

    declaration = {
        "name": "lookup",
        "description": "Look something up.",
        "parameters": {
            "type": "OBJECT",
            "properties": {"q": {"type": "STRING"}},
            "required": ["q"],
        },
    }
    replies = [
        calls(call_part("lookup", q="x"), call_part("lookup", q="y")),
        text_response("x and y found."),
    ]
    g, led = diff.run(replies, script, config={"tools": [{"function_declarations": [declaration]}]})

    assert g.observed == led.observed == [["lookup", "lookup"], "x and y found."]
    assert_same(g, led)
    assert led.contents[1][-2:] == [
        {"role": "model", "parts": [call_part("lookup", q="x"), call_part("lookup", q="y")]},
        {
            "role": "user",
            "parts": [wire_fr("lookup", {"found": "x"}), wire_fr("lookup", {"found": "y"})],
        },
    ]
    assert "function_called" not in led.events


def test_declarations_next_to_python_functions_turn_afc_off(diff: Differential) -> None:
    """As google-genai 3.3.0: a tool holding function declarations next to Python
    functions makes AFC "incompatible": it is off for the request, so even a call of the
    Python function is returned to the caller, not run."""
    ran: list[str] = []

    def local_lookup(q: str) -> str:
        """Look up locally."""
        ran.append(q)
        return q

    def script(chat: Any, t: Any) -> Any:
        response = chat.send_message("find q")
        return [call.name for call in response.function_calls or []]

    declaration = {"name": "remote_lookup", "description": "Look up remotely."}
    tools = [local_lookup, {"function_declarations": [declaration]}]
    replies = [calls(call_part("local_lookup", q="q"))]
    g, led = diff.run(replies, script, config={"tools": tools})

    assert g.observed == led.observed == ["local_lookup"]
    assert ran == []
    assert_same_but_unanswered_calls(g, led)
    # One tool with both declarations, the Python function's first, as google-genai.
    names = [d["name"] for d in led.bodies[0]["tools"][0]["functionDeclarations"]]
    assert sorted(names) == ["local_lookup", "remote_lookup"]
    assert "function_called" not in led.events


# =========================================================================== several calls


def test_several_calls_in_one_response(diff: Differential) -> None:
    """All calls of a response run, in order; their answers go back in one user content,
    in the same order. Each call and each response is its own event (index = position in
    the response)."""

    def script(chat: Any, t: Any) -> Any:
        return chat.send_message("Weather in Paris and Oslo, and the time in Oslo").text

    replies = [
        calls(
            call_part("get_weather", city="Paris"),
            call_part("get_weather", city="Oslo"),
            call_part("get_time", city="Oslo", twenty_four_hour=False),
        ),
        text_response("Done."),
    ]
    g, led = diff.run(replies, script, config={"tools": [get_weather, get_time]})

    assert g.observed == led.observed == "Done."
    assert_same(g, led)
    assert led.full[2] == {
        "role": "user",
        "parts": [
            fr("get_weather", {"result": {"city": "Paris", "temp_c": 21}}),
            fr("get_weather", {"result": {"city": "Oslo", "temp_c": 21}}),
            fr("get_time", {"result": "12:00 pm"}),
        ],
    }
    called = led.event_data("function_called")
    responded = led.event_data("function_responded")
    assert [(data.index, data.name, data.args) for data in called] == [
        (0, "get_weather", {"city": "Paris"}),
        (1, "get_weather", {"city": "Oslo"}),
        (2, "get_time", {"city": "Oslo", "twenty_four_hour": False}),
    ]
    assert [(data.index, data.name) for data in responded] == [
        (0, "get_weather"),
        (1, "get_weather"),
        (2, "get_time"),
    ]
    # The sync chat runs them one after another: call, response, call, response ...
    assert led.events[4:10] == ["function_called", "function_responded"] * 3


def test_function_call_ids_are_echoed_in_the_responses(diff: Differential) -> None:
    """SMALLER DIFFERENCE (docs/differences.md#google-genai-smaller): when the model's function call carries an ``id``, chatledger's
    function response carries the same ``id`` (so that several calls of one function are
    paired exactly, docs/chat-api.md#context); google-genai 3.3.0's AFC answers by name only. The
    histories and requests are otherwise identical."""

    def script(chat: Any, t: Any) -> Any:
        return chat.send_message("Weather in Paris and Oslo").text

    replies = [
        calls(
            {"functionCall": {"id": "call-1", "name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"id": "call-2", "name": "get_weather", "args": {"city": "Oslo"}}},
        ),
        text_response("Done."),
    ]
    g, led = diff.run(replies, script, config={"tools": [get_weather]})

    assert g.observed == led.observed == "Done."
    genai_answers = g.contents[1][-1]["parts"]
    ledger_answers = led.contents[1][-1]["parts"]
    assert [part["functionResponse"].get("id") for part in genai_answers] == [None, None]
    assert [part["functionResponse"].get("id") for part in ledger_answers] == ["call-1", "call-2"]
    for part in ledger_answers:
        del part["functionResponse"]["id"]
    assert ledger_answers == genai_answers
    assert led.bodies[0] == g.bodies[0]
    called = led.event_data("function_called")
    assert [data.call_id for data in called] == ["call-1", "call-2"]
    assert [data.call_id for data in led.event_data("function_responded")] == ["call-1", "call-2"]


# =========================================================================== streaming


STREAM_REPLIES = [
    sse(calls(call_part("get_weather", city="Paris"))),
    sse(calls(call_part("get_time", city="Paris"))),
    sse(text_chunk("21 C and "), text_chunk("noon in Paris.", "STOP")),
]


def test_stream_with_afc(diff: Differential) -> None:
    def script(chat: Any, t: Any) -> Any:
        return [chunk.text for chunk in chat.send_message_stream("Weather and time in Paris?")]

    g, led = diff.run(STREAM_REPLIES, script, config={"tools": [get_weather, get_time]})

    # Every chunk of every step reaches the caller, function calls included.
    assert g.observed == led.observed == [None, None, "21 C and ", "noon in Paris."]
    assert led.paths == g.paths
    assert all(path.endswith(":streamGenerateContent") for path in led.paths)
    assert led.bodies == g.bodies
    # The last step streamed two chunks: google-genai keeps one model content per chunk,
    # chatledger one merged content (docs/differences.md#stream-one-turn). Everything before it is identical.
    assert led.full == TWO_ROUNDS_FULL
    assert g.full == [*TWO_ROUNDS_FULL[:-1], model("21 C and "), model("noon in Paris.")]
    assert led.events == ["conversation_started", *AFC_TURN_EVENTS]
    responded = led.event_data("model_responded")
    assert [data.streamed for data in responded] == [True, True, True]
    assert led.chat.last.text == "21 C and noon in Paris."


async def test_async_stream_with_afc(adiff: Differential) -> None:
    async def script(chat: Any, t: Any) -> Any:
        stream = await chat.send_message_stream("Weather and time in Paris?")
        return [chunk.text async for chunk in stream]

    g, led = await adiff.arun(STREAM_REPLIES, script, config={"tools": [get_weather, get_time]})

    assert g.observed == led.observed == [None, None, "21 C and ", "noon in Paris."]
    assert led.bodies == g.bodies
    assert led.full == TWO_ROUNDS_FULL
    assert g.full[:-2] == TWO_ROUNDS_FULL[:-1]
    assert led.events == ["conversation_started", *AFC_TURN_EVENTS]


def test_stream_with_a_call_split_over_chunks(diff: Differential) -> None:
    """docs/differences.md#stream-one-turn for a function call step: text then a call in two chunks. chatledger
    records (and sends back) one model content with both parts; google-genai records and
    sends one content per chunk. The function runs once in both."""
    ran: list[str] = []

    def lookup(q: str) -> str:
        """Look up."""
        ran.append(q)
        return "found"

    def script(chat: Any, t: Any) -> Any:
        return [chunk.text for chunk in chat.send_message_stream("find q")]

    replies = [
        sse(text_chunk("Let me look. "), calls(call_part("lookup", q="q"))),
        sse(text_chunk("Found it.", "STOP")),
    ]
    g, led = diff.run(replies, script, config={"tools": [lookup]})

    assert g.observed == led.observed == ["Let me look. ", None, "Found it."]
    assert ran == ["q", "q"]
    step = [{"text": "Let me look. "}, call_part("lookup", q="q")]
    answer = {"role": "user", "parts": [wire_fr("lookup", {"result": "found"})]}
    assert led.contents[1] == [user("find q"), {"role": "model", "parts": step}, answer]
    assert g.contents[1] == [
        user("find q"),
        {"role": "model", "parts": [step[0]]},
        {"role": "model", "parts": [step[1]]},
        answer,
    ]
    assert led.full[1] == {
        "role": "model",
        "parts": [{"text": "Let me look. "}, fc("lookup", q="q")],
    }


def test_stream_runs_functions_after_the_step_ends(diff: Differential) -> None:
    """SMALLER DIFFERENCE (docs/differences.md#google-genai-smaller): google-genai runs a streamed call's function as soon as the chunk
    holding it arrives, before yielding that chunk; chatledger yields every chunk of the
    step first and runs the functions once the step's stream has ended (the step is one
    merged content, docs/differences.md#stream-one-turn), so a stream cut short runs nothing."""

    def script(chat: Any, t: Any) -> Any:
        order: list[str] = []

        def noted(q: str) -> str:
            """Note the call."""
            order.append("function ran")
            return "ok"

        config = {"tools": [noted]}
        for chunk in chat.send_message_stream("go", config=config):
            order.append(f"chunk {chunk.text or 'call'}")
        return order

    replies = [
        sse(calls(call_part("noted", q="q")), text_chunk("(after the call)", "STOP")),
        sse(text_chunk("done", "STOP")),
    ]
    g, led = diff.run(replies, script)

    assert g.observed == ["function ran", "chunk call", "chunk (after the call)", "chunk done"]
    assert led.observed == ["chunk call", "chunk (after the call)", "function ran", "chunk done"]


# =========================================================================== async functions


async def test_async_functions_in_the_async_chat(adiff: Differential) -> None:
    async def fetch_weather(city: str) -> dict[str, Any]:
        """The weather, fetched."""
        await asyncio.sleep(0)
        return {"city": city, "temp_c": 18}

    async def script(chat: Any, t: Any) -> Any:
        return (await chat.send_message("Weather in Oslo?")).text

    replies = [calls(call_part("fetch_weather", city="Oslo")), text_response("18 C.")]
    g, led = await adiff.arun(replies, script, config={"tools": [fetch_weather]})

    assert g.observed == led.observed == "18 C."
    assert_same(g, led)
    assert log_summary(led) == [
        ("called", "fetch_weather", {"city": "Oslo"}),
        ("responded", "fetch_weather", {"result": {"city": "Oslo", "temp_c": 18}}),
    ]


async def test_async_functions_of_one_response_run_concurrently(adiff: Differential) -> None:
    """Each function notes that it started, then yields to the loop a few times and
    reports whether the other one has started meanwhile. chatledger runs the calls of one
    response concurrently (both see the other); google-genai runs them one after another
    (the first sees nothing). The requests differ only in those results."""
    started: dict[str, asyncio.Event] = {}

    def make(name: str, other: str) -> Any:
        async def probe() -> str:
            started[name].set()
            for _ in range(20):
                if started[other].is_set():
                    return "ran alongside the other"
                await asyncio.sleep(0)
            return "ran alone"

        probe.__name__ = name
        probe.__doc__ = f"Probe {name}."
        return probe

    first, second = make("first", "second"), make("second", "first")

    async def script(chat: Any, t: Any) -> Any:
        started.clear()
        started.update(first=asyncio.Event(), second=asyncio.Event())
        return (await chat.send_message("probe")).text

    replies = [calls(call_part("first"), call_part("second")), text_response("probed")]
    g, led = await adiff.arun(replies, script, config={"tools": [first, second]})

    def results(run: Run) -> list[str]:
        return [
            part["functionResponse"]["response"]["result"] for part in run.contents[1][-1]["parts"]
        ]

    assert results(g) == ["ran alone", "ran alongside the other"]
    assert results(led) == ["ran alongside the other", "ran alongside the other"]
    assert led.bodies[0] == g.bodies[0]
    # The async chat records all calls of the response, then all responses.
    assert led.events[4:8] == [
        "function_called",
        "function_called",
        "function_responded",
        "function_responded",
    ]


async def test_async_functions_that_wait_for_each_other_complete(
    db_path: Path, gemini_server: GeminiServer
) -> None:
    """The strong proof of concurrency: each function waits for an event only the other
    sets. Run one after another, the first would wait for ever (bounded here by WAIT)."""
    a_started, b_started = asyncio.Event(), asyncio.Event()

    async def a() -> str:
        """A."""
        a_started.set()
        await b_started.wait()
        return "a done"

    async def b() -> str:
        """B."""
        b_started.set()
        await a_started.wait()
        return "b done"

    differential = Differential(gemini_server, db_path)
    try:
        differential.enqueue([calls(call_part("a"), call_part("b")), text_response("both done")])
        chat = differential.create_ledger(is_async=True, config={"tools": [a, b]})
        response = await asyncio.wait_for(chat.send_message("go"), WAIT)
        assert response.text == "both done"
        history = chat.get_history()
        assert [part.function_response.response for part in history[2].parts] == [
            {"result": "a done"},
            {"result": "b done"},
        ]
    finally:
        differential.close_resumed()
        await differential.aclose()


async def test_sync_functions_in_the_async_chat_run_in_threads_concurrently(
    db_path: Path, gemini_server: GeminiServer
) -> None:
    """A plain function in the async chat runs in a worker thread (as google-genai), so
    it never blocks the event loop; the calls of one response run at once: each waits
    (in its thread) for an event only the other sets."""
    a_started, b_started = threading.Event(), threading.Event()
    loop_threads: set[int] = set()

    def left() -> str:
        """Left."""
        loop_threads.add(threading.get_ident())
        a_started.set()
        return "left done" if b_started.wait(WAIT) else "left alone"

    def right() -> str:
        """Right."""
        loop_threads.add(threading.get_ident())
        b_started.set()
        return "right done" if a_started.wait(WAIT) else "right alone"

    differential = Differential(gemini_server, db_path)
    try:
        differential.enqueue([calls(call_part("left"), call_part("right")), text_response("ok")])
        chat = differential.create_ledger(is_async=True, config={"tools": [left, right]})
        await chat.send_message("go")
        history = chat.get_history()
        assert [part.function_response.response for part in history[2].parts] == [
            {"result": "left done"},
            {"result": "right done"},
        ]
        assert threading.get_ident() not in loop_threads
    finally:
        differential.close_resumed()
        await differential.aclose()


# =========================================================================== declarations


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(pydantic.BaseModel):
    street: str
    where: Point


def d_str(city: str) -> str:
    """The weather in a city.

    Args:
        city: The city's name.
    """
    return city


def d_int(n: int) -> int:
    return n


def d_float(x: float) -> float:
    """A float."""
    return x


def d_bool(flag: bool) -> bool:
    return flag


def d_optional(x: Optional[int]) -> Optional[str]:  # noqa: UP045 - the old spelling on purpose
    return None


def d_optional_defaults(x: Optional[int] = None, y: int | None = 3) -> None:  # noqa: UP045
    return None


def d_literal(unit: Literal["c", "f"] = "c") -> dict:  # type: ignore[type-arg]
    return {}


def d_list(names: list[str]) -> list[int]:
    return []


def d_dict(data: dict) -> dict[str, int]:  # type: ignore[type-arg]
    return {}


def d_dict_typed(data: dict[str, float]) -> Any:
    return data


def d_model(p: Point) -> Point:
    return p


def d_nested_models(a: Address, points: list[Point]) -> Address:
    return a


def d_optional_model(p: Optional[Point] = None) -> Optional[Point]:  # noqa: UP045
    return p


def d_defaults(a: str, b: int = 2, c: float = 1.5, d: bool = False, e: str = "x") -> str:
    return a


def d_no_args() -> str:
    """Takes nothing; its return type is not declared (as google-genai)."""
    return "x"


def d_no_args_no_return():  # type: ignore[no-untyped-def]
    return 1


def d_no_return(a: int):  # type: ignore[no-untyped-def]
    return a


def d_returns_none(a: int) -> None:
    return None


def d_union(a: Union[int, str]) -> int | str:  # noqa: UP007
    return a


def d_enum(c: Color) -> str:
    return c.value


def d_enum_default(c: Color = Color.BLUE) -> str:
    return c.value


def d_tuple(t: tuple[int, str]) -> tuple[int, int]:
    return (1, 2)


def d_any(a: Any) -> Any:
    return a


def d_keyword_only(a: int, *, b: str = "q") -> str:
    return b


def d_list_default(tags: list[str] = []) -> list[str]:  # noqa: B006
    return tags


def d_annotated(
    city: Annotated[str, pydantic.Field(description="The city.")],
    days: Annotated[int, pydantic.Field(ge=1, le=7)] = 1,
) -> str:
    return city


def d_star_args(city: str, *args: Any, **kwargs: Any) -> str:
    return city


class Service:
    def lookup(self, key: str, limit: int = 10) -> list[str]:
        """Look up a key (a bound method)."""
        return [key]


async def d_async(city: str) -> str:
    """An async function."""
    return city


SIGNATURES = [
    d_str,
    d_int,
    d_float,
    d_bool,
    d_optional,
    d_optional_defaults,
    d_literal,
    d_list,
    d_dict,
    d_dict_typed,
    d_model,
    d_nested_models,
    d_optional_model,
    d_defaults,
    d_no_args,
    d_no_args_no_return,
    d_no_return,
    d_returns_none,
    d_union,
    d_enum,
    d_enum_default,
    d_tuple,
    d_any,
    d_keyword_only,
    d_list_default,
    d_annotated,
    d_star_args,
    Service().lookup,
    d_async,
]


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


@pytest.mark.parametrize("func", SIGNATURES, ids=lambda f: f.__name__)
def test_declaration_equals_google_genais_from_callable(diff: Differential, func: Any) -> None:
    declaration = genai_types.FunctionDeclaration.from_callable(
        client=diff.genai._api_client, callable=func, use_json_schema=True
    )
    expected = {
        _camel(key): value
        for key, value in declaration.model_dump(mode="json", exclude_none=True).items()
    }
    assert declare(func) == expected


def test_declarations_are_sent_as_google_genai_sends_them(diff: Differential) -> None:
    """Every signature above (but the async one, which a sync chat refuses) in one chat:
    the first request's tools are identical; the conversation_started event records the
    declarations that were sent."""
    tools = [func for func in SIGNATURES if func not in (d_async, d_enum_default)]

    def script(chat: Any, t: Any) -> Any:
        return chat.send_message("Hi").text

    g, led = diff.run([text_response("Hello")], script, config={"tools": tools})

    assert_same(g, led)
    sent = led.bodies[0]["tools"]
    assert len(sent) == 1
    assert [d["name"] for d in sent[0]["functionDeclarations"]] == [f.__name__ for f in tools]
    started = led.records[0].data
    assert isinstance(started, ConversationStarted) and started.config is not None
    assert started.config["tools"] == led.requests[0].body["tools"]


def test_an_enum_default_is_sent_as_its_value(diff: Differential) -> None:
    """SMALLER DIFFERENCE (docs/differences.md#google-genai-smaller): google-genai 3.3.0 puts the Enum member itself in the declared
    schema's ``default`` and then cannot encode the request (TypeError); chatledger sends
    the member's value."""

    def script(chat: Any, t: Any) -> Any:
        return capture(lambda: chat.send_message("Hi"))

    g = diff.run_genai([], script, config={"tools": [d_enum_default]})
    led = diff.run_ledger([text_response("Hello")], script, config={"tools": [d_enum_default]})

    assert isinstance(g.observed, TypeError) and "Color is not JSON serializable" in str(g.observed)
    assert g.requests == []
    schema = led.requests[0].body["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]
    assert schema["properties"]["c"]["default"] == "blue"


async def test_async_declarations_are_sent_as_google_genai_sends_them(adiff: Differential) -> None:
    async def script(chat: Any, t: Any) -> Any:
        return (await chat.send_message("Hi")).text

    g, led = await adiff.arun(
        [text_response("Hello")], script, config={"tools": [d_async, d_model]}
    )

    assert_same(g, led)


class _Opaque:
    """A type pydantic cannot describe as JSON Schema."""


def test_a_type_pydantic_cannot_describe_is_refused_naming_where_it_is() -> None:
    def takes(a: _Opaque) -> int:
        return 1

    def gives(a: int) -> _Opaque:
        return _Opaque()

    with pytest.raises(FunctionCallingError, match=r"cannot declare parameter a: .* of function"):
        declare(takes)
    with pytest.raises(FunctionCallingError, match=r"cannot declare the return type .* gives"):
        declare(gives)


def test_unannotated_parameters_are_refused_as_google_genai_does(diff: Differential) -> None:
    def untyped(a, b=3):  # type: ignore[no-untyped-def]
        return a

    with pytest.raises(ValueError, match="Failed to parse the parameter a"):
        genai_types.FunctionDeclaration.from_callable(
            client=diff.genai._api_client, callable=untyped, use_json_schema=True
        )
    with pytest.raises(FunctionCallingError, match="parameter a of function untyped"):
        declare(untyped)
    ledger_chats = diff.ledger.chats
    before = len(ledger_chats.list())
    with pytest.raises(FunctionCallingError, match="parameter a of function untyped"):
        ledger_chats.create(model="gemini-test", config={"tools": [untyped]})
    assert len(ledger_chats.list()) == before  # nothing was recorded


# =========================================================================== arguments


def take_literal(unit: Literal["c", "f"]) -> str:
    """A Literal parameter."""
    return unit


def take_enum(color: Color) -> str:
    """An Enum parameter."""
    return f"{type(color).__name__}.{color.name}"


def take_any(value: Any) -> Any:
    """An Any parameter."""
    return value


def take_float(x: float) -> str:
    """A float parameter."""
    return type(x).__name__


def take_nested(a: Address, more: list[Point], table: dict[str, Point]) -> str:
    """Pydantic models, in lists and dicts too."""
    return (
        f"{type(a.where).__name__} {[type(p).__name__ for p in more]} {type(table['k']).__name__}"
    )


def test_arguments_are_converted_as_google_genai_converts_them(diff: Differential) -> None:
    """Pydantic models (nested, in lists, in dict values) are built from the model's dicts;
    an int stays an int for a float parameter; 2.0 becomes 2."""

    def script(chat: Any, t: Any) -> Any:
        return chat.send_message("go").text

    replies = [
        calls(
            call_part(
                "take_nested",
                a={"street": "Main", "where": {"x": 1}},
                more=[{"x": 2}],
                table={"k": {"x": 3}},
            ),
            call_part("take_float", x=2),
            call_part("take_any", value={"n": 2.0, "list": [1.0, 1.5]}),
        ),
        text_response("ok"),
    ]
    g = diff.run_genai(replies, script, config={"tools": [take_nested, take_float, take_any]})
    led = diff.run_ledger(replies, script, config={"tools": [take_nested, take_float, take_any]})

    # The first two are identical; google-genai cannot call a function with an ``Any``
    # parameter at all (its isinstance check raises) - see the next test.
    genai_answers = g.contents[1][-1]["parts"]
    ledger_answers = led.contents[1][-1]["parts"]
    assert (
        ledger_answers[:2]
        == genai_answers[:2]
        == [
            wire_fr("take_nested", {"result": "Point ['Point'] Point"}),
            wire_fr("take_float", {"result": "int"}),
        ]
    )
    assert ledger_answers[2] == wire_fr("take_any", {"result": {"n": 2, "list": [1, 1.5]}})


def test_parameters_google_genai_cannot_check_are_validated_with_pydantic(
    diff: Differential,
) -> None:
    """SMALLER DIFFERENCE (docs/differences.md#google-genai-smaller): google-genai 3.3.0 checks each argument with ``isinstance``
    against its annotation, which raises for ``Literal``, ``Any`` and other parameterized
    annotations and refuses an ``Enum`` member's value: such functions can never be called
    through its AFC (the model gets an error). chatledger validates these with pydantic and
    calls the function; a value that does not validate still gets google-genai's text."""

    def script(chat: Any, t: Any) -> Any:
        return chat.send_message("go").text

    replies = [
        calls(
            call_part("take_literal", unit="f"),
            call_part("take_enum", color="blue"),
            call_part("take_any", value=[1, "a"]),
            call_part("take_enum", color="green"),
        ),
        text_response("ok"),
    ]
    tools = {"tools": [take_literal, take_enum, take_any]}
    g = diff.run_genai(replies, script, config=tools)
    led = diff.run_ledger(replies, script, config=tools)

    assert led.bodies[0] == g.bodies[0]
    genai_answers = [part["functionResponse"]["response"] for part in g.contents[1][-1]["parts"]]
    ledger_answers = [part["functionResponse"]["response"] for part in led.contents[1][-1]["parts"]]
    assert genai_answers[:3] == [
        {"error": "Subscripted generics cannot be used with class and instance checks"},
        {
            "error": "Failed to parse parameter color for function take_enum from function "
            "call part because function call argument value blue is not compatible with "
            "parameter annotation <enum 'Color'>."
        },
        {"error": "typing.Any cannot be used with isinstance()"},
    ]
    assert ledger_answers[:3] == [
        {"result": "f"},
        {"result": "Color.BLUE"},
        {"result": [1, "a"]},
    ]
    # "green" is no Color: the same error text from both.
    assert ledger_answers[3] == genai_answers[3]
    assert "value green is not compatible" in ledger_answers[3]["error"]


def test_run_function_matches_google_genai_for_many_argument_shapes() -> None:
    """The conversion, function by function, against google-genai's own AFC helper."""
    from google.genai import _extra_utils

    cases: list[tuple[Any, dict[str, Any]]] = [
        (broken_forecast, {"city": "Paris", "days": 2.0}),
        (broken_forecast, {"city": "Paris"}),
        (broken_forecast, {}),
        (get_weather, {"city": "Oslo", "unexpected": 1}),
        (d_int, {"n": "3"}),
        (d_int, {"n": 3.0}),
        (d_float, {"x": 3}),
        (d_model, {"p": {"x": 1}}),
        (d_model, {"p": {"x": "a"}}),
        (d_model, {"p": "not a dict"}),
        (d_list, {"names": ["a", "b"]}),
        (d_list, {"names": ["a", 1]}),
        (d_nested_models, {"a": {"street": "s", "where": {"x": 1}}, "points": [{"x": 2}]}),
        (d_optional, {"x": None}),
        (d_optional, {"x": 4}),
        (d_optional_model, {"p": {"x": 1}}),
        (d_no_args, {"x": 1}),
        (d_union, {"a": "s"}),
        (d_union, {"a": 2.5}),
        (d_dict_typed, {"data": {"a": 1}}),
        (d_keyword_only, {"a": 1, "b": "z"}),
        (Service().lookup, {"key": "k"}),
    ]
    for func, args in cases:
        response = genai_types.GenerateContentResponse(
            candidates=[
                genai_types.Candidate(
                    content=genai_types.Content(
                        role="model",
                        parts=[genai_types.Part.from_function_call(name=func.__name__, args=args)],
                    )
                )
            ]
        )
        (part,) = _extra_utils.get_function_response_parts(response, {func.__name__: func})
        assert part.function_response is not None
        expected = part.function_response.model_dump(mode="json")["response"]
        assert run_function(func, args).response == expected, (func.__name__, args)


def test_results_are_sent_as_google_genai_sends_them(diff: Differential) -> None:
    """Return values of several kinds: a pydantic model, a list, None, a float, a nested
    dict; the function response parts and histories are identical."""

    def model_result() -> Point:
        """A model."""
        return Point(x=1, y=2.5)

    def many_results(kind: str) -> Any:
        """Several kinds."""
        return {"list": [1, "a", None], "none": None, "float": 2.5, "nested": {"a": {"b": []}}}[
            kind
        ]

    def script(chat: Any, t: Any) -> Any:
        return chat.send_message("go").text

    replies = [
        calls(
            call_part("model_result"),
            *(call_part("many_results", kind=k) for k in ("list", "none", "float", "nested")),
        ),
        text_response("ok"),
    ]
    g, led = diff.run(replies, script, config={"tools": [model_result, many_results]})

    assert_same(g, led)
    assert led.contents[1][-1]["parts"][0] == wire_fr(
        "model_result", {"result": {"x": 1, "y": 2.5}}
    )


# =========================================================================== sync chat, async tool


def test_sync_chat_refuses_an_async_function_before_sending(diff: Differential) -> None:
    """Both refuse a coroutine function in a sync chat with AFC on, before any request."""

    def script(chat: Any, t: Any) -> Any:
        outcome = capture(lambda: chat.send_message("go"))
        assert isinstance(outcome, Exception)
        return type(outcome).__name__, "coroutine" in str(outcome)

    g, led = diff.run([], script, config={"tools": [d_async]})

    assert g.observed == ("UnsupportedFunctionError", True)
    assert led.observed == ("FunctionCallingError", True)
    assert g.requests == led.requests == []
    assert led.events == ["conversation_started"]


# =========================================================================== calls without args


def current_time() -> str:
    """The current time."""
    return "12:00"


def test_a_call_without_args_is_returned_not_run_as_google_genai(diff: Differential) -> None:
    """The model may leave ``args`` out of a call to a function without parameters.
    google-genai's sync AFC runs only calls that have ``args``: such a call is returned
    to the caller, and chatledger does the same."""

    def script(chat: Any, t: Any) -> Any:
        response = chat.send_message("What time is it?")
        return [(call.name, call.args) for call in response.function_calls or []]

    replies = [calls({"functionCall": {"name": "current_time"}})]
    g, led = diff.run(replies, script, config={"tools": [current_time]})

    assert g.observed == led.observed == [("current_time", None)]
    assert_same_but_unanswered_calls(g, led)
    assert "function_called" not in led.events


NO_ARGS_REPLIES = [calls({"functionCall": {"name": "current_time"}}), text_response("Noon.")]


async def test_google_genais_async_chat_runs_a_call_without_args(adiff: Differential) -> None:
    """What the next (xfail) test expects of chatledger: google-genai's async AFC treats
    missing ``args`` as ``{}`` and runs the call."""

    async def script(chat: Any, t: Any) -> Any:
        return (await chat.send_message("What time is it?")).text

    g = await adiff.arun_genai(NO_ARGS_REPLIES, script, config={"tools": [current_time]})
    assert g.observed == "Noon."
    assert g.contents[1][-1] == {
        "role": "user",
        "parts": [wire_fr("current_time", {"result": "12:00"})],
    }


async def test_async_a_call_without_args_is_run_as_google_genai(adiff: Differential) -> None:
    async def script(chat: Any, t: Any) -> Any:
        return (await chat.send_message("What time is it?")).text

    g, led = await adiff.arun(NO_ARGS_REPLIES, script, config={"tools": [current_time]})
    assert led.observed == g.observed == "Noon."
    assert_same(g, led)
