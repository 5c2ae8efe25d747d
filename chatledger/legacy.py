"""The older ``google.generativeai`` chat surface, on chatledger's event log (docs/legacy.md).

    from chatledger.legacy import GenerativeModel

    model = GenerativeModel("gemini-2.5-flash", system_instruction="Be brief.",
                            client=chatledger.Client(store="chats.db"))
    chat = model.start_chat()
    response = chat.send_message("Hello")
    print(response.text, len(chat.history))          # ... 2
    for chunk in chat.send_message("Tell me more", stream=True):
        print(chunk.text, end="")

A :class:`ChatSession` is a thin layer over a chatledger :class:`~chatledger.Chat` (and,
for ``send_message_async``, an :class:`~chatledger.AsyncChat` of the same conversation),
so every message, reply, function call, rewind and history change is an event in the
log; ``session.id`` names the conversation, which ``chatledger.Client(store=...)
.chats.get(id)`` resumes in any process.

It behaves as google.generativeai 0.8.6's ``ChatSession`` (checked against 0.8.6 in
``tests/test_legacy_differential.py``): histories, ``last``, ``rewind()`` (the last two
contents; an ``IndexError`` on an empty history), blocked prompts and stopped candidates
(``BlockedPromptException`` / ``StopCandidateException``), broken streams
(``BrokenResponseError`` until ``rewind()``), one chunk read ahead, a raising function
tool's exception, ``request_options``, ``copy.copy``, editing the ``history`` list and
``repr``. Where it differs, and why, is in docs/differences.md (section
"google.generativeai 0.8.6"): chiefly, requests follow google-genai's conventions
(the context is sent, JSON Schema declarations, ``{"result": ...}`` function responses,
at most ``maximum_remote_calls`` automatic function calls), and a content given without
a role gets the role of its place.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import inspect
import reprlib
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, cast

import pydantic

from .client import AsyncChat, Chat, Client
from .client._convert import content_from_wire, history_to_wire
from .errors import (
    ChatStateError,
    ConcurrencyError,
    ConversationBusyError,
    InvalidInputError,
    redact,
)
from .events.kinds import HistoryReplaced, TurnAbandoned
from .types import Content, GenerateContentConfig, Part, is_python_function_tool
from .types import GenerateContentResponse as _LedgerResponse

__all__ = [
    "AsyncGenerateContentResponse",
    "BlockedPromptException",
    "BrokenResponseError",
    "ChatSession",
    "EmptyHistoryError",
    "GenerateContentResponse",
    "GenerativeModel",
    "IncompleteIterationError",
    "StopCandidateException",
]


class IncompleteIterationError(ChatStateError):
    """A streamed response was used (or its session was) before its stream ended."""


class BlockedPromptException(Exception):
    """The prompt was blocked (``prompt_feedback.block_reason``); its argument is the
    prompt feedback. As google.generativeai's."""


class StopCandidateException(Exception):
    """The candidate stopped for a reason other than STOP or MAX_TOKENS (safety ...);
    its argument is the candidate. As google.generativeai's."""


class BrokenResponseError(Exception):
    """The last streamed response broke (it failed, or its candidate was stopped): call
    ``rewind()`` to take it back. As google.generativeai's."""


class EmptyHistoryError(ChatStateError, IndexError):
    """``rewind()`` on an empty history (an ``IndexError``, as google.generativeai's)."""


_INCOMPLETE = (
    "the streamed response is not finished: iterate over it to the end (or call "
    "response.resolve()) before {what}, or abandon it with response.close()"
)

# --------------------------------------------------------------------------- conversions

_GENERATION_KEYS = frozenset(
    {
        "candidate_count",
        "stop_sequences",
        "max_output_tokens",
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "response_logprobs",
        "logprobs",
        "response_mime_type",
        "response_schema",
        "response_json_schema",
        "response_modalities",
        "media_resolution",
        "speech_config",
        "thinking_config",
    }
)

_CATEGORIES = {
    "harm_category_unspecified": "HARM_CATEGORY_UNSPECIFIED",
    "unspecified": "HARM_CATEGORY_UNSPECIFIED",
    "harm_category_harassment": "HARM_CATEGORY_HARASSMENT",
    "harassment": "HARM_CATEGORY_HARASSMENT",
    "harm_category_hate_speech": "HARM_CATEGORY_HATE_SPEECH",
    "hate_speech": "HARM_CATEGORY_HATE_SPEECH",
    "hate": "HARM_CATEGORY_HATE_SPEECH",
    "harm_category_sexually_explicit": "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "harm_category_sexual": "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "sexually_explicit": "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "sexual": "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "sex": "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "harm_category_dangerous_content": "HARM_CATEGORY_DANGEROUS_CONTENT",
    "harm_category_dangerous": "HARM_CATEGORY_DANGEROUS_CONTENT",
    "dangerous_content": "HARM_CATEGORY_DANGEROUS_CONTENT",
    "dangerous": "HARM_CATEGORY_DANGEROUS_CONTENT",
    "danger": "HARM_CATEGORY_DANGEROUS_CONTENT",
    "harm_category_civic_integrity": "HARM_CATEGORY_CIVIC_INTEGRITY",
    "civic_integrity": "HARM_CATEGORY_CIVIC_INTEGRITY",
}
_CATEGORY_NUMBERS = {
    0: "HARM_CATEGORY_UNSPECIFIED",
    7: "HARM_CATEGORY_HARASSMENT",
    8: "HARM_CATEGORY_HATE_SPEECH",
    9: "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    10: "HARM_CATEGORY_DANGEROUS_CONTENT",
    11: "HARM_CATEGORY_CIVIC_INTEGRITY",
}
_THRESHOLDS = {
    "harm_block_threshold_unspecified": "HARM_BLOCK_THRESHOLD_UNSPECIFIED",
    "block_threshold_unspecified": "HARM_BLOCK_THRESHOLD_UNSPECIFIED",
    "unspecified": "HARM_BLOCK_THRESHOLD_UNSPECIFIED",
    "block_low_and_above": "BLOCK_LOW_AND_ABOVE",
    "low": "BLOCK_LOW_AND_ABOVE",
    "block_medium_and_above": "BLOCK_MEDIUM_AND_ABOVE",
    "medium": "BLOCK_MEDIUM_AND_ABOVE",
    "med": "BLOCK_MEDIUM_AND_ABOVE",
    "block_only_high": "BLOCK_ONLY_HIGH",
    "high": "BLOCK_ONLY_HIGH",
    "block_none": "BLOCK_NONE",
    "none": "BLOCK_NONE",
    "off": "OFF",
}
_THRESHOLD_NUMBERS = {
    0: "HARM_BLOCK_THRESHOLD_UNSPECIFIED",
    1: "BLOCK_LOW_AND_ABOVE",
    2: "BLOCK_MEDIUM_AND_ABOVE",
    3: "BLOCK_ONLY_HIGH",
    4: "BLOCK_NONE",
    5: "OFF",
}
# What a single threshold applies to (as google.generativeai: every category but
# "unspecified"), in a fixed order.
_EVERY_CATEGORY = (
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
)
# As google.generativeai 0.8.6's ``to_function_calling_mode``: names with or without "mode_".
_MODES = {
    "mode_unspecified": "MODE_UNSPECIFIED",
    "unspecified": "MODE_UNSPECIFIED",
    "mode_auto": "AUTO",
    "auto": "AUTO",
    "mode_any": "ANY",
    "any": "ANY",
    "mode_none": "NONE",
    "none": "NONE",
}
_MODE_NUMBERS = {0: "MODE_UNSPECIFIED", 1: "AUTO", 2: "ANY", 3: "NONE"}


def _is_proto_message(value: Any) -> bool:
    """A proto-plus message (google.generativeai's ``protos`` objects)."""
    return hasattr(type(value), "to_dict") and hasattr(type(value), "pb")


def _proto_to_dict(value: Any) -> dict[str, Any]:
    to_dict = type(value).to_dict
    try:
        result = to_dict(
            value, use_integers_for_enums=False, always_print_fields_with_no_presence=False
        )
    except TypeError:  # an older proto-plus
        result = to_dict(value, use_integers_for_enums=False, including_default_value_fields=False)
    return dict(result)


def _enum_key(value: Any) -> Any:
    """An enum member's name, lower-cased strings, ints as they are."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not hasattr(value, "name"):
        return value
    name = getattr(value, "name", None)
    if isinstance(name, str):
        return name.lower()
    if isinstance(value, str):
        return value.strip().lower()
    return value


def _lookup(value: Any, names: dict[str, str], numbers: dict[int, str], what: str) -> str:
    key = _enum_key(value)
    if isinstance(key, str):
        if key in names:
            return names[key]
        if key.upper() in names.values():
            return key.upper()
    elif isinstance(key, int) and key in numbers:
        return numbers[key]
    raise InvalidInputError(f"unknown {what} {value!r}; use one of {sorted(set(names.values()))}")


def _safety_dict(settings: Any) -> dict[str, str]:
    """google.generativeai's "easy" safety settings: category -> threshold."""
    if settings is None:
        return {}
    if isinstance(settings, (str, int)) or hasattr(settings, "name"):
        threshold = _lookup(settings, _THRESHOLDS, _THRESHOLD_NUMBERS, "safety threshold")
        return dict.fromkeys(_EVERY_CATEGORY, threshold)
    if isinstance(settings, Mapping):
        return {
            _lookup(key, _CATEGORIES, _CATEGORY_NUMBERS, "harm category"): _lookup(
                value, _THRESHOLDS, _THRESHOLD_NUMBERS, "safety threshold"
            )
            for key, value in settings.items()
        }
    if isinstance(settings, Iterable):
        result: dict[str, str] = {}
        for setting in settings:
            if _is_proto_message(setting):
                setting = _proto_to_dict(setting)
            elif hasattr(setting, "model_dump"):
                setting = setting.model_dump(exclude_none=True)
            if (
                not isinstance(setting, Mapping)
                or "category" not in setting
                or "threshold" not in setting
            ):
                raise InvalidInputError(
                    f"a safety setting needs a category and a threshold, got {setting!r}"
                )
            category = _lookup(setting["category"], _CATEGORIES, _CATEGORY_NUMBERS, "harm category")
            result[category] = _lookup(
                setting["threshold"], _THRESHOLDS, _THRESHOLD_NUMBERS, "safety threshold"
            )
        return result
    raise InvalidInputError(
        "safety_settings must be a threshold, a {category: threshold} dict or a list of "
        f"{{'category', 'threshold'}} dicts, got {type(settings).__name__}"
    )


def _generation_config(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, Mapping):
        values = dict(config)
    elif _is_proto_message(config):
        values = _proto_to_dict(config)
    elif hasattr(config, "model_dump"):
        values = config.model_dump(exclude_none=True)
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        values = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
    else:
        raise InvalidInputError(
            f"generation_config must be a dict or a GenerationConfig, got {type(config).__name__}"
        )
    values = {key: value for key, value in values.items() if value is not None}
    unknown = sorted(set(values) - _GENERATION_KEYS)
    if unknown:
        raise InvalidInputError(
            f"generation_config has no field(s) {unknown}; it takes {sorted(_GENERATION_KEYS)} "
            "(tools, tool_config, safety_settings and system_instruction are arguments of "
            "their own)"
        )
    if int(values.get("candidate_count", 1)) > 1:
        raise InvalidInputError(
            "Invalid configuration: The chat functionality does not support "
            "`candidate_count` greater than 1."
        )
    return values


def _tools(tools: Any) -> list[Any]:
    if (
        isinstance(tools, (Mapping, str, bytes))
        or callable(tools)
        or not isinstance(tools, Iterable)
    ):
        tools = [tools]
    result: list[Any] = []
    for tool in tools:
        if _is_proto_message(tool):
            tool = _proto_to_dict(tool)
        if isinstance(tool, Mapping) and "name" in tool and "function_declarations" not in tool:
            tool = {"function_declarations": [dict(tool)]}  # a bare declaration
        if is_python_function_tool(tool):
            tool = _propagating(tool)
        result.append(tool)
    return result


class _FunctionRaised(BaseException):
    """A Python function tool raised: carries its exception past chatledger's automatic
    function calling (which answers an ``Exception`` to the model) to the session, which
    raises it as google.generativeai does."""

    def __init__(self, name: str, error: Exception) -> None:
        super().__init__(name, error)
        self.name = name
        self.error = error


def _propagating(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func``, declared the same (``functools.wraps``), whose exceptions end the turn."""
    if getattr(func, "_chatledger_propagating", False):
        return func
    wrapper: Any
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await func(*args, **kwargs)
            except Exception as exc:
                raise _FunctionRaised(func.__name__, exc) from exc

    else:

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except Exception as exc:
                raise _FunctionRaised(func.__name__, exc) from exc

    wrapper._chatledger_propagating = True
    return cast("Callable[..., Any]", wrapper)


def _tool_config(tool_config: Any) -> dict[str, Any]:
    if _is_proto_message(tool_config):
        tool_config = _proto_to_dict(tool_config)
    if hasattr(tool_config, "model_dump"):
        tool_config = tool_config.model_dump(exclude_none=True)
    if not isinstance(tool_config, Mapping) or "function_calling_config" not in tool_config:
        raise InvalidInputError(
            "tool_config must be a dict like {'function_calling_config': {'mode': 'ANY', "
            f"'allowed_function_names': [...]}}}}, got {tool_config!r}"
        )
    calling = tool_config["function_calling_config"]
    if _is_proto_message(calling):
        calling = _proto_to_dict(calling)
    if not isinstance(calling, Mapping):
        calling = {"mode": calling}
    calling = dict(calling)
    if "mode" in calling:
        calling["mode"] = _lookup(calling["mode"], _MODES, _MODE_NUMBERS, "function calling mode")
    return {**tool_config, "function_calling_config": calling}


def _part(value: Any) -> Any:
    """One part as google.generativeai accepts it, in a form chatledger accepts."""
    if _is_proto_message(value):
        name = type(value).__name__
        data = _proto_to_dict(value)
        if name == "FunctionCall":
            return Part(function_call=data)
        if name == "FunctionResponse":
            return Part(function_response=data)
        if name == "Blob":
            return Part(inline_data=data)
        if name == "FileData":
            return Part(file_data=data)
        value = data
    if isinstance(value, Mapping):
        if set(value) == {"mime_type", "data"}:  # a blob dict
            return Part.from_bytes(data=value["data"], mime_type=value["mime_type"])
        try:
            part = Part.model_validate(dict(value))
        except ValueError as exc:
            raise InvalidInputError(f"not a valid part: {exc}") from None
        if not any(getattr(part, field) is not None for field in Part.model_fields):
            raise InvalidInputError(
                "Unable to determine the intended type of the `dict`: a part needs a key such "
                "as 'text', 'inline_data', 'file_data', 'function_call' or "
                f"'function_response'; got {list(value)}"
            )
        return part
    return value


def _message(content: Any) -> Any:
    """A ``send_message`` content in a form chatledger's ``send_message`` accepts."""
    if content is None or (isinstance(content, (str, list, tuple, Mapping)) and not content):
        raise InvalidInputError(
            "Invalid input: 'content' argument must not be empty. Please provide a non-empty value."
        )
    if _is_proto_message(content) and type(content).__name__ == "Content":
        content = _proto_to_dict(content)
    if isinstance(content, pydantic.BaseModel) and type(content).__name__ == "Content":
        content = Content.model_validate(content)  # also google-genai's Content
    if isinstance(content, Content):
        content = {"role": content.role, "parts": list(content.parts or [])}
    if isinstance(content, Mapping) and "parts" in content:
        parts = content["parts"]
        if isinstance(parts, (str, Mapping)) or not isinstance(parts, Iterable):
            parts = [parts]
        converted = [_part(part) for part in parts]
        if not converted:
            raise InvalidInputError("a message content needs at least one part")
        role = content.get("role") or "user"
        if role == "model":
            if (
                len(converted) == 1
                and isinstance(converted[0], Part)
                and converted[0].function_call
            ):
                return converted[0]  # a function call Part is sent as a model turn
            raise InvalidInputError(
                "a message is the user's turn; a content with role 'model' can only hold one "
                "function call (set the model's turns with `history`)"
            )
        if role != "user":
            raise InvalidInputError(f"a message's role must be 'user', got {role!r}")
        return converted
    if isinstance(content, (list, tuple)):
        return [_part(part) for part in content]
    return _part(content)


_CONTENT_CLASSES = frozenset({"Content", "UserContent", "ModelContent"})


def _history(history: Any) -> list[dict[str, Any]]:
    """A ``history`` as wire contents (validated as chatledger validates histories)."""
    if history is None:
        return []
    if isinstance(history, (str, bytes, Mapping)) or not isinstance(history, Iterable):
        raise InvalidInputError(
            f"history must be a list of contents ({{'role': ..., 'parts': [...]}}), got {type(history).__name__}"
        )
    contents: list[Any] = []
    previous_role: Any = None
    for index, item in enumerate(history):
        if _is_proto_message(item):
            item = _proto_to_dict(item)
        if isinstance(item, pydantic.BaseModel) and type(item).__name__ in _CONTENT_CLASSES:
            item = {
                "role": getattr(item, "role", None),
                "parts": list(getattr(item, "parts", None) or []),
            }
        if isinstance(item, Mapping) and not item.get("role"):
            # google.generativeai keeps such a content with an empty role. The log records
            # every content as the user's or the model's (its turns are what rewind, forks
            # and the curated history work on): the place of the content says which.
            item = {**item, "role": "model" if previous_role == "user" else "user"}
        if isinstance(item, Mapping):
            previous_role = item.get("role")
            if "parts" not in item:
                raise InvalidInputError(f"history[{index}] has no 'parts': {item!r}")
            parts = item["parts"]
            if isinstance(parts, (str, Mapping)) or not isinstance(parts, Iterable):
                parts = [parts]
            converted = [_part(part) for part in parts]
            item = {
                **item,
                # Parts stay objects: history_to_wire checks them (a Part changed after
                # validation may hold anything) as it writes them.
                "parts": [Part(text=part) if isinstance(part, str) else part for part in converted],
            }
        contents.append(item)
    return history_to_wire(contents)


# --------------------------------------------------------------------------- responses


_NO_TEXT = (
    "Invalid operation: The `response.text` quick accessor requires the response to contain "
    "a valid `Part`, but none were returned. The candidate's finish_reason is {reason}."
)


class GenerateContentResponse:
    """A response as google.generativeai shapes it, over chatledger's response.

    With ``stream=True`` it is iterable: each chunk (a chatledger
    :class:`~chatledger.types.GenerateContentResponse`) is yielded as it arrives. Once the
    stream has ended, the response holds the whole merged reply (``text``,
    ``candidates``, ``usage_metadata``), as without streaming; before that,
    ``candidates`` (and what derives from it) raise :class:`IncompleteIterationError`.
    ``result`` is the underlying chatledger response.
    """

    def __init__(
        self,
        result: _LedgerResponse | None,
        *,
        chunks: Iterator[_LedgerResponse] | AsyncIterator[_LedgerResponse] | None = None,
        final: Callable[[], _LedgerResponse | None] | None = None,
        on_done: Callable[[GenerateContentResponse], None] | None = None,
    ) -> None:
        self._iterator = chunks
        self._final = final
        self._on_done = on_done
        self._done = chunks is None
        self._chunks: list[_LedgerResponse] = [result] if result is not None else []
        self._result: _LedgerResponse | None = result
        self._error: BaseException | None = None
        self._abandoned = False
        self._raised: _FunctionRaised | None = None

    # ----------------------------------------------------------------- stream state

    def _finish(self, error: BaseException | None = None) -> None:
        if isinstance(error, _FunctionRaised):
            # A function tool raised: its exception is the stream's (as a plain send's).
            self._raised, error = error, error.error
        self._done = True
        self._iterator = None
        self._error = error
        if error is None and self._final is not None:
            self._result = self._final()
        if self._on_done is not None:
            self._on_done(self)

    def _pull(self) -> None:
        """Read one more chunk from the stream (or learn that it has ended)."""
        iterator = self._iterator
        if not isinstance(iterator, Iterator):
            raise TypeError("this response streams asynchronously: use `async for`")
        try:
            chunk = next(iterator)
        except StopIteration:
            self._finish()
        except BaseException as exc:
            self._finish(exc)
            if isinstance(exc, _FunctionRaised):
                raise exc.error from None
            raise
        else:
            self._chunks.append(chunk)

    @property
    def done(self) -> bool:
        """Whether the stream has ended (always true without streaming)."""
        return self._done

    def _require_done(self) -> None:
        if not self._done:
            raise IncompleteIterationError(_INCOMPLETE.format(what="reading the whole response"))

    # ----------------------------------------------------------------- sync iteration

    def __iter__(self) -> Iterator[_LedgerResponse]:
        # As google.generativeai: read one chunk ahead, so that when the last chunk is
        # yielded the response already knows it is done (an error met while reading
        # ahead is raised after the chunk before it).
        index = 0
        while True:
            if index < len(self._chunks) - 1 or (self._done and index < len(self._chunks)):
                index += 1
                yield self._chunks[index - 1]
            elif self._done:
                if self._error is not None:
                    raise self._error
                return
            else:
                with contextlib.suppress(Exception):  # kept in self._error
                    self._pull()

    def resolve(self) -> None:
        """Read the rest of the stream (a no-op once it has ended)."""
        for _ in self:
            pass

    def close(self) -> None:
        """Abandon an unfinished stream: the attempt is recorded, the history unchanged."""
        if self._done:
            return
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()
        self._abandoned = True
        self._finish(ChatStateError("the stream was abandoned with close() before it ended"))

    # ----------------------------------------------------------------- accessors

    @property
    def result(self) -> _LedgerResponse:
        """The chatledger response: the merged reply once the stream has ended (the
        chunks merged so far before that)."""
        if self._result is None:
            return _merge(self._chunks)
        return self._result

    @property
    def candidates(self) -> list[Any]:
        self._require_done()
        return list(self.result.candidates or [])

    @property
    def parts(self) -> list[Part]:
        candidates = self.candidates
        if not candidates:
            message = (
                "Invalid operation: The `response.parts` quick accessor requires a single "
                "candidate, but `response.candidates` is empty."
            )
            if self.prompt_feedback is not None:
                message += f"\nThis appears to be caused by a blocked prompt, see `response.prompt_feedback`: {self.prompt_feedback}"
            raise ValueError(message)
        if len(candidates) > 1:
            raise ValueError(
                "Invalid operation: The `response.parts` quick accessor retrieves the parts "
                "for a single candidate. This response contains multiple candidates, please "
                "use `result.candidates[index].text`."
            )
        content = candidates[0].content
        return list(content.parts or []) if content is not None else []

    @property
    def text(self) -> str:
        """The text of the parts, joined by newlines (as google.generativeai)."""
        parts = self.parts
        if not parts:
            reason = self.candidates[0].finish_reason
            raise ValueError(_NO_TEXT.format(reason=getattr(reason, "value", reason)))
        texts: list[str] = []
        for part in parts:
            if part.text is not None:
                texts.append(part.text)
            elif part.executable_code is not None:
                language = str(part.executable_code.language or "").lower()
                language = "" if language in ("", "language_unspecified") else f" {language}"
                texts.extend(
                    [f"```{language}", (part.executable_code.code or "").lstrip("\n"), "```"]
                )
            elif part.code_execution_result is not None:
                outcome = (
                    str(part.code_execution_result.outcome or "").lower().replace("outcome_", "")
                )
                outcome = "" if outcome in ("", "ok", "unspecified") else f" {outcome}"
                texts.extend([f"```{outcome}", part.code_execution_result.output or "", "```"])
            else:
                kind = next(
                    (name for name in Part.model_fields if getattr(part, name) is not None), "empty"
                )
                raise ValueError(f"Could not convert `part.{kind}` to text.")
        return "\n".join(texts)

    @property
    def function_calls(self) -> list[Any]:
        """The function calls of the reply (an empty list when there are none)."""
        return [part.function_call for part in self.parts if part.function_call is not None]

    @property
    def prompt_feedback(self) -> Any:
        return self.result.prompt_feedback

    @property
    def usage_metadata(self) -> Any:
        return self.result.usage_metadata

    @property
    def model_version(self) -> str | None:
        return self.result.model_version

    def to_dict(self) -> dict[str, Any]:
        """The (merged so far) response as JSON-ready data."""
        data: dict[str, Any] = self.result.model_dump(mode="json", exclude_none=True)
        return data

    def __repr__(self) -> str:
        state = "done" if self._done else "streaming"
        return f"<{type(self).__name__} {state} result={self.result!r}>"


class AsyncGenerateContentResponse(GenerateContentResponse):
    """The async twin: ``async for chunk in response`` and ``await response.resolve()``."""

    async def _apull(self) -> None:
        iterator = self._iterator
        if iterator is None or isinstance(iterator, Iterator):
            raise TypeError("this response streams synchronously: use `for`")
        try:
            chunk = await iterator.__anext__()
        except StopAsyncIteration:
            self._finish()
        except BaseException as exc:
            self._finish(exc)
            if isinstance(exc, _FunctionRaised):
                raise exc.error from None
            raise
        else:
            self._chunks.append(chunk)

    async def __aiter__(self) -> AsyncIterator[_LedgerResponse]:
        index = 0
        while True:
            if index < len(self._chunks) - 1 or (self._done and index < len(self._chunks)):
                index += 1
                yield self._chunks[index - 1]
            elif self._done:
                if self._error is not None:
                    raise self._error
                return
            else:
                with contextlib.suppress(Exception):  # kept in self._error
                    await self._apull()

    def __iter__(self) -> Iterator[_LedgerResponse]:
        if not self._done:
            raise TypeError("this response streams asynchronously: use `async for`")
        return super().__iter__()

    async def resolve(self) -> None:  # type: ignore[override]
        """Read the rest of the stream (a no-op once it has ended)."""
        async for _ in self:
            pass

    async def aclose(self) -> None:
        """Abandon an unfinished stream (see :meth:`GenerateContentResponse.close`)."""
        if self._done:
            return
        aclose = getattr(self._iterator, "aclose", None)
        if aclose is not None:
            await aclose()
        self._abandoned = True
        self._finish(ChatStateError("the stream was abandoned with aclose() before it ended"))


def _merge(chunks: list[_LedgerResponse]) -> _LedgerResponse:
    from .client._stream import StreamMerger

    merger = StreamMerger()
    for chunk in chunks:
        merger.add(chunk.to_wire())
    return _LedgerResponse.model_validate(merger.merged())


# --------------------------------------------------------------------------- the model


class GenerativeModel:
    """google.generativeai's ``GenerativeModel``: a model name and its default settings.

    ``client`` is the :class:`chatledger.Client` whose log the chats are recorded in
    (default: a new ``chatledger.Client()``, which reads ``CHATLEDGER_DB`` and the API
    key from the environment). ``tools`` may hold Python functions, which
    ``start_chat(enable_automatic_function_calling=True)`` calls for the model.
    """

    def __init__(
        self,
        model_name: str,
        *,
        generation_config: Any = None,
        safety_settings: Any = None,
        tools: Any = None,
        tool_config: Any = None,
        system_instruction: Any = None,
        client: Client | None = None,
    ) -> None:
        if not isinstance(model_name, str) or not model_name.strip():
            raise InvalidInputError(f"model_name must be a non-empty string, got {model_name!r}")
        self._model = model_name.removeprefix("models/")
        self._model_name = model_name if "/" in model_name else f"models/{model_name}"
        self._generation_config = _generation_config(generation_config)
        self._safety_settings = _safety_dict(safety_settings)
        self._tools = _tools(tools) if tools is not None else None
        self._tool_config = _tool_config(tool_config) if tool_config is not None else None
        self._system_instruction = _system_instruction(system_instruction)
        if client is not None and not isinstance(client, Client):
            raise InvalidInputError(
                f"client must be a chatledger.Client, got {type(client).__name__}"
            )
        self._client = client if client is not None else Client()
        self._config(automatic_function_calling=False)  # refuse a bad setting now

    @property
    def model_name(self) -> str:
        """The model's name, ``models/...`` as google.generativeai shows it."""
        return self._model_name

    @property
    def client(self) -> Client:
        return self._client

    def __repr__(self) -> str:
        # google.generativeai 0.8.6's layout (a ChatSession's repr nests it).
        instruction: Any = self._system_instruction
        if isinstance(instruction, Content) and instruction.parts and instruction.parts[0].text:
            instruction = repr(instruction.parts[0].text)
        elif isinstance(instruction, Part) and instruction.text:
            instruction = repr(instruction.text)
        return (
            "genai.GenerativeModel(\n"
            f"    model_name='{self._model_name}',\n"
            f"    generation_config={self._generation_config},\n"
            f"    safety_settings={self._safety_settings},\n"
            f"    tools={self._tools},\n"
            f"    system_instruction={instruction},\n"
            "    cached_content=None\n"
            ")"
        )

    def _config(self, *, automatic_function_calling: bool) -> GenerateContentConfig:
        config: dict[str, Any] = dict(self._generation_config)
        if self._safety_settings:
            config["safety_settings"] = _safety_list(self._safety_settings)
        if self._tools is not None:
            config["tools"] = self._tools
        if self._tool_config is not None:
            config["tool_config"] = self._tool_config
        if self._system_instruction is not None:
            config["system_instruction"] = self._system_instruction
        if not automatic_function_calling:
            config["automatic_function_calling"] = {"disable": True}
        try:
            return GenerateContentConfig.model_validate(config)
        except ValueError as exc:
            raise InvalidInputError(f"invalid model settings: {exc}") from None

    def _override(
        self, generation_config: Any, safety_settings: Any, tools: Any, tool_config: Any
    ) -> dict[str, Any] | None:
        """A send's settings as a per-message config (chatledger merges it over the
        chat's, as google.generativeai merges them over the model's)."""
        override: dict[str, Any] = _generation_config(generation_config)
        if safety_settings is not None:
            merged = {**self._safety_settings, **_safety_dict(safety_settings)}
            override["safety_settings"] = _safety_list(merged)
        if tools is not None:
            override["tools"] = _tools(tools)
        if tool_config is not None:
            override["tool_config"] = _tool_config(tool_config)
        return override or None

    def start_chat(
        self,
        history: Iterable[Any] | None = None,
        enable_automatic_function_calling: bool = False,
    ) -> ChatSession:
        """A new chat session (a new conversation in the log), optionally with a history.

        With ``enable_automatic_function_calling``, the Python functions among the tools
        are called for the model (chatledger's automatic function calling); without it,
        function calls are returned to the caller.
        """
        config = self._config(automatic_function_calling=bool(enable_automatic_function_calling))
        chat = self._client.chats.create(
            model=self._model, config=config, history=_history(history)
        )
        return ChatSession(
            self,
            chat,
            config,
            enable_automatic_function_calling=bool(enable_automatic_function_calling),
        )

    def resume_chat(
        self, conversation_id: str, *, enable_automatic_function_calling: bool = False
    ) -> ChatSession:
        """The session of an existing conversation (from this or any process), with this
        model's settings and tools (a change of settings is recorded)."""
        config = self._config(automatic_function_calling=bool(enable_automatic_function_calling))
        chat = self._client.chats.get(conversation_id, config=config)
        return ChatSession(
            self,
            chat,
            config,
            enable_automatic_function_calling=bool(enable_automatic_function_calling),
        )


def _safety_list(settings: dict[str, str]) -> list[dict[str, str]]:
    return [
        {"category": category, "threshold": threshold} for category, threshold in settings.items()
    ]


def _system_instruction(value: Any) -> Any:
    if value is None:
        return None
    if _is_proto_message(value):
        value = _proto_to_dict(value)
    if isinstance(value, Mapping) and "parts" in value:
        parts = value["parts"]
        if isinstance(parts, (str, Mapping)) or not isinstance(parts, Iterable):
            parts = [parts]
        converted = [_part(part) for part in parts]
        return Content(
            role=value.get("role") or "user",
            parts=[Part(text=p) if isinstance(p, str) else p for p in converted],
        )
    if isinstance(value, (list, tuple)):
        return [_part(part) for part in value]
    return _part(value)


# --------------------------------------------------------------------------- the session

# The finish reasons google.generativeai 0.8.6 accepts; any other stops the candidate.
_GOOD_FINISH = frozenset({None, "FINISH_REASON_UNSPECIFIED", "STOP", "MAX_TOKENS"})

_BROKEN = (
    "Unable to build a coherent chat history due to a broken streaming response. "
    "Refer to the previous exception for details. "
    "To inspect the last response object, use `chat.last`. "
    "To remove the last request/response `Content` objects from the chat, "
    "call `last_send, last_received = chat.rewind()` and continue without it."
)


def _finish_reason(response: _LedgerResponse) -> str | None:
    candidates = response.candidates or []
    if not candidates or candidates[0].finish_reason is None:
        return None
    return str(candidates[0].finish_reason.value)


def _stop_error(response: _LedgerResponse) -> Exception | None:
    """The exception google.generativeai 0.8.6 raises for this (complete) response."""
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        return BlockedPromptException(feedback)
    if _finish_reason(response) not in _GOOD_FINISH:
        return StopCandidateException(response.candidates[0] if response.candidates else None)
    return None


def _legacy_contents(contents: list[Content]) -> list[Content]:
    """Contents as google.generativeai shows them: one class (``Content``, where
    google-genai has ``UserContent`` for a sent message), and a reply received without
    a role given the role "model"."""
    result: list[Content] = []
    for content in contents:
        wire = content.to_wire()
        if content.role is None:
            wire["role"] = "model"
        result.append(Content.model_validate(wire))
    return result


_REPR = reprlib.Repr()


def _content_repr(content: Content) -> str:
    """A content as google.generativeai 0.8.6 shows it: ``protos.Content({...})`` with
    reprlib's abbreviations, parts keyed by their snake_case field names."""
    parts: list[dict[str, Any]] = []
    for part in content.parts or []:
        data = part.model_dump(mode="python", exclude_none=True)
        inline = data.get("inline_data")
        if isinstance(inline, dict):
            blob = part.inline_data
            assert blob is not None
            data["inline_data"] = {
                "mime_type": blob.mime_type or "",
                "data": base64.b64encode(blob.data or b"").decode("ascii"),
            }
        parts.append(data)
    return f"protos.Content({_REPR.repr({'parts': parts, 'role': content.role or ''})})"


class _HistoryList(list):  # type: ignore[type-arg]
    """``ChatSession.history``: a list whose changes are the session's history changes,
    as in google.generativeai (where ``history`` is the session's own list). Each change
    records a ``history_replaced`` event; a list read before the session moved on is
    stale and refuses changes (it would take back the turns sent since)."""

    def __init__(self, contents: list[Content], session: ChatSession, version: int) -> None:
        super().__init__(contents)
        self._session = session
        self._version = version

    def _changed(self) -> None:
        session = self._session
        if session.chat.version != self._version:
            raise ChatStateError(
                "this history list was read before the chat changed: read chat.history "
                "again and change that list, or assign chat.history = [...]"
            )
        session.history = list(self)
        self._version = session.chat.version

    def _check(self) -> None:
        if self._session.chat.version != self._version:
            self._changed()  # raises

    def __setitem__(self, index: Any, value: Any) -> None:
        self._check()
        super().__setitem__(index, value)
        self._changed()

    def __delitem__(self, index: Any) -> None:
        self._check()
        super().__delitem__(index)
        self._changed()

    def __iadd__(self, values: Any) -> _HistoryList:  # type: ignore[misc]
        self._check()
        super().__iadd__(values)
        self._changed()
        return self

    def __imul__(self, count: Any) -> _HistoryList:  # type: ignore[misc]
        self._check()
        super().__imul__(count)
        self._changed()
        return self

    def append(self, value: Any) -> None:
        self._check()
        super().append(value)
        self._changed()

    def extend(self, values: Any) -> None:
        self._check()
        super().extend(values)
        self._changed()

    def insert(self, index: Any, value: Any) -> None:
        self._check()
        super().insert(index, value)
        self._changed()

    def pop(self, index: Any = -1) -> Any:
        self._check()
        value = super().pop(index)
        self._changed()
        return value

    def remove(self, value: Any) -> None:
        self._check()
        super().remove(value)
        self._changed()

    def clear(self) -> None:
        self._check()
        super().clear()
        self._changed()

    def sort(self, *args: Any, **kwargs: Any) -> None:
        self._check()
        super().sort(*args, **kwargs)
        self._changed()

    def reverse(self) -> None:
        self._check()
        super().reverse()
        self._changed()


class _Broken:
    """A streamed turn google.generativeai calls broken: it failed, or its candidate
    stopped for a reason other than STOP or MAX_TOKENS."""

    __slots__ = ("error", "recorded", "response", "sent")

    def __init__(
        self, response: GenerateContentResponse, sent: Any, error: BaseException, recorded: bool
    ) -> None:
        self.response = response
        self.sent = sent
        self.error = error
        self.recorded = recorded  # whether the turn is in the log's history


def _request_options(options: Any) -> tuple[float | None, dict[str, Any] | None]:
    """``request_options`` (a dict or google.generativeai's ``RequestOptions``) as a
    timeout in seconds and chatledger retry options."""
    if isinstance(options, Mapping):
        values = dict(options)
    elif hasattr(options, "timeout") or hasattr(options, "retry"):
        values = {
            "timeout": getattr(options, "timeout", None),
            "retry": getattr(options, "retry", None),
        }
    else:
        raise InvalidInputError(
            "request_options must be a dict like {'timeout': 30, 'retry': ...}, got "
            f"{type(options).__name__}"
        )
    unknown = sorted(set(values) - {"timeout", "retry"})
    if unknown:
        raise InvalidInputError(
            f"request_options has no key(s) {unknown}; it takes 'timeout' and 'retry'"
        )
    timeout = values.get("timeout")
    if timeout is not None and not isinstance(timeout, (int, float)):
        # google.api_core's TimeToDeadlineTimeout
        timeout = getattr(timeout, "_timeout", None)
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
    ):
        raise InvalidInputError(
            f"request_options['timeout'] must be a positive number of seconds, got {timeout!r}"
        )
    return (float(timeout) if timeout is not None else None), _retry_options(values.get("retry"))


def _retry_options(retry: Any) -> dict[str, Any] | None:
    """A ``google.api_core.retry.Retry`` (or a dict of chatledger's ``HttpRetryOptions``)
    as retry options: its initial delay, multiplier and maximum delay, and as many
    attempts as its deadline (``timeout``, 120 s by default) leaves room for."""
    if retry is None:
        return None
    if isinstance(retry, Mapping):
        return dict(retry)
    initial = getattr(retry, "_initial", None)
    if initial is None:
        raise InvalidInputError(
            "request_options['retry'] must be a google.api_core.retry.Retry or a dict of "
            f"retry options, got {type(retry).__name__}"
        )
    maximum = float(getattr(retry, "_maximum", 60.0))
    multiplier = float(getattr(retry, "_multiplier", 2.0))
    deadline = getattr(retry, "_timeout", None)
    deadline = 120.0 if deadline is None else float(deadline)
    attempts, waited, delay = 1, 0.0, float(initial)
    while attempts < 100 and waited + delay <= deadline:
        waited += delay
        attempts += 1
        delay = min(delay * multiplier, maximum)
    return {
        "attempts": attempts,
        "initial_delay": float(initial),
        "max_delay": maximum,
        "exp_base": multiplier,
        "jitter": 0.0,
    }


class ChatSession:
    """google.generativeai's ``ChatSession``, recorded in chatledger's log.

    ``history`` is the full history (every completed turn, automatic function calling
    steps included), a list whose changes (and assigning ``history``) record a
    ``history_replaced`` event. ``last`` is the last response. ``rewind()`` takes back
    the last turn (a ``turn_rewound`` event). ``copy.copy(session)`` is a fork of the
    conversation at its current version. ``id`` is the conversation id; ``chat`` the
    underlying :class:`chatledger.Chat`.
    """

    def __init__(
        self,
        model: GenerativeModel,
        chat: Chat,
        config: GenerateContentConfig,
        *,
        enable_automatic_function_calling: bool = False,
    ) -> None:
        self.model = model
        self._chat = chat
        self._config = config
        self._achat: AsyncChat | None = None
        self.enable_automatic_function_calling = enable_automatic_function_calling
        self._open: GenerateContentResponse | None = None
        self._open_sent: Any = None
        self._last: GenerateContentResponse | None = None
        # Whether ``last`` was taken into the history (read), rewound or replaced.
        self._last_taken = False
        self._broken: _Broken | None = None
        self._siblings: dict[tuple[Any, ...], Client] = {}

    def __repr__(self) -> str:
        model = repr(self.model).replace("\n", "\n" + " " * 4)
        try:
            contents = [_content_repr(c) for c in self.history]
        except (BrokenResponseError, IncompleteIterationError):
            contents = [_content_repr(c) for c in _legacy_contents(self._chat.get_history())]
            broken = self._broken
            if broken is not None and broken.recorded:
                contents = contents[:-2]
            sent = broken.sent if broken is not None else self._open_sent
            if sent is not None:
                contents.append(_content_repr(sent))
            contents.append(
                "<STREAMING ERROR>" if broken is not None else "<STREAMING IN PROGRESS>"
            )
        return f"ChatSession(\n    model={model},\n    history=[{', '.join(contents)}]\n)"

    def _fork(self, *, enable_automatic_function_calling: bool) -> ChatSession:
        _ = self.history  # as google.generativeai: refused while a stream is unfinished or broken
        config = self.model._config(automatic_function_calling=enable_automatic_function_calling)
        return ChatSession(
            self.model,
            self._chat.fork(config=config),
            config,
            enable_automatic_function_calling=enable_automatic_function_calling,
        )

    def __copy__(self) -> ChatSession:
        """An independent session: a fork of this conversation at its current version
        (recorded as a fork in the log), with the same model. As google.generativeai's
        ``copy.copy``, automatic function calling is off in the copy."""
        return self._fork(enable_automatic_function_calling=False)

    def __deepcopy__(self, memo: dict[int, Any]) -> ChatSession:
        """As :meth:`__copy__`, keeping ``enable_automatic_function_calling`` (as
        google.generativeai's ``copy.deepcopy``). The model is shared, not copied: its
        settings never change, and its client is the log's."""
        return self._fork(enable_automatic_function_calling=self.enable_automatic_function_calling)

    @property
    def id(self) -> str:
        """The conversation id in the log."""
        return self._chat.id

    @property
    def chat(self) -> Chat:
        """The chatledger chat this session sends through (events, verify, fork ...)."""
        return self._chat

    def _async_chat(self) -> AsyncChat:
        if self._achat is None:
            self._achat = self.model.client.aio.chats.get(self.id, config=self._config)
        return self._achat

    def _check_idle(self, what: str) -> None:
        if self._open is not None and not self._open.done:
            raise IncompleteIterationError(_INCOMPLETE.format(what=what))

    def _check_whole(self) -> None:
        broken = self._broken
        if broken is not None:
            if broken.response._error is None:
                broken.response._error = broken.error  # as google.generativeai
            raise BrokenResponseError(_BROKEN) from broken.error

    def _stream_ended(self, response: GenerateContentResponse) -> None:
        if self._open is not response:
            return
        self._open = None
        sent, self._open_sent = self._open_sent, None
        error = response._error
        if response._raised is not None:
            self._close_raised_turn(response._raised)
        if response._abandoned:
            return
        if error is None:
            stop = _stop_error(response.result)
            if stop is not None:
                # The turn is in the log's history; rewind() takes it back.
                self._broken = _Broken(response, sent, stop, recorded=True)
        elif isinstance(error, Exception):
            self._broken = _Broken(response, sent, error, recorded=False)

    # ----------------------------------------------------------------- sending

    def _prepare(
        self,
        content: Any,
        generation_config: Any,
        safety_settings: Any,
        tools: Any,
        tool_config: Any,
        request_options: Any,
    ) -> tuple[Any, dict[str, Any] | None, Client | None]:
        self._check_idle("sending another message")
        self._check_whole()
        client = self._client_for(request_options) if request_options else None
        message = _message(content)
        override = self.model._override(generation_config, safety_settings, tools, tool_config)
        return message, override, client

    def _client_for(self, request_options: Any) -> Client:
        """A client on the same log whose model calls have ``request_options``' timeout
        and retries (one per distinct setting, kept for the session's later calls)."""
        timeout, retry = _request_options(request_options)
        key = (timeout, tuple(sorted((retry or {}).items())))
        client = self._siblings.get(key)
        if client is None:
            base = self.model.client
            options = base.http_options.model_dump() if base.http_options is not None else {}
            if timeout is not None:
                options["timeout"] = int(timeout * 1000)
            if retry is not None:
                options["retry_options"] = retry
            client = Client(
                base._api_key,
                http_options=options,
                store=base.store,
                actor=base.actor,
                transport=base._transport_override,
                busy_timeout=base.busy_timeout,
                turn_lease=base.turn_lease,
            )
            self._siblings[key] = client
            weakref.finalize(self, client.close)
        return client

    def _close_raised_turn(self, raised: _FunctionRaised) -> None:
        """Close the turn a raising function tool left open: a ``turn_abandoned`` event
        that names the function and its error (the history stays as before the send, as
        in google.generativeai, where the exception propagates)."""
        conversation = self._chat._conversation
        conversation.catch_up()
        pending = conversation.history.pending
        if pending is None:
            return
        error = raised.error
        reason = redact(f"function {raised.name} raised {type(error).__name__}: {error}")
        with contextlib.suppress(ConcurrencyError):
            conversation.append([TurnAbandoned(turn=pending.turn, reason=reason[:1000])])

    def _record_stop(self, response: _LedgerResponse, turns_before: int) -> None:
        """Raise google.generativeai's exception for a blocked prompt or a stopped
        candidate, after taking the recorded turn back (it stays in the log, followed by
        a ``turn_rewound`` event), so that the history is as before the send."""
        error = _stop_error(response)
        if error is None:
            return
        self._chat.refresh()
        if len(self._chat._conversation.history.turns) > turns_before:
            self._chat.rewind()
        raise error

    def send_message(
        self,
        content: Any,
        *,
        generation_config: Any = None,
        safety_settings: Any = None,
        stream: bool = False,
        tools: Any = None,
        tool_config: Any = None,
        request_options: Any = None,
    ) -> GenerateContentResponse:
        """Send ``content`` with the history; return the model's response.

        ``content`` may be a str, a Part (or part dict), a list of them, or a
        ``{"role": "user", "parts": [...]}`` dict. ``generation_config`` and
        ``safety_settings`` override the model's for this message; ``tools`` and
        ``tool_config`` replace them. ``request_options`` (``timeout`` in seconds,
        ``retry``) apply to this message's model calls. With ``stream=True`` the response
        is iterable.

        As google.generativeai: a blocked prompt raises :class:`BlockedPromptException`
        and a candidate stopped for safety (or another reason than STOP / MAX_TOKENS)
        :class:`StopCandidateException`, with the history as before (the attempt stays
        in the log, taken back by a ``turn_rewound`` event).
        """
        message, config, client = self._prepare(
            content, generation_config, safety_settings, tools, tool_config, request_options
        )
        chat = self._chat
        sender = chat if client is None else client.chats.get(self.id, config=self._config)
        turns_before = len(chat._conversation.history.turns)
        if not stream:
            try:
                result = sender.send_message(message, config=config)
            except _FunctionRaised as raised:
                self._close_raised_turn(raised)
                raise raised.error from None
            finally:
                if sender is not chat:
                    chat.refresh()
            self._record_stop(result, turns_before)
            response = GenerateContentResponse(result)
            self._last, self._last_taken = response, False
            return response
        response = GenerateContentResponse(
            None,
            chunks=sender.send_message_stream(message, config=config),
            final=lambda: sender.last,
            on_done=self._stream_ended,
        )
        self._open = response
        self._open_sent = _sent_content(message)
        # As google.generativeai: the request is made now, and its first chunk read.
        try:
            response._pull()
        except BaseException:
            # As google.generativeai: a send that fails at once leaves no broken stream.
            self._open = self._broken = None
            raise
        finally:
            if response.done and sender is not chat:
                chat.refresh()
        first = response._chunks[0] if response._chunks else None
        feedback = first.prompt_feedback if first is not None else None
        if feedback is not None and feedback.block_reason is not None:
            self._open = None
            with contextlib.suppress(Exception):
                response.resolve()
            if sender is not chat:
                chat.refresh()
            self._broken = None
            self._record_stop(_LedgerResponse(prompt_feedback=feedback), turns_before)
        self._last, self._last_taken = response, False
        return response

    async def send_message_async(
        self,
        content: Any,
        *,
        generation_config: Any = None,
        safety_settings: Any = None,
        stream: bool = False,
        tools: Any = None,
        tool_config: Any = None,
        request_options: Any = None,
    ) -> AsyncGenerateContentResponse:
        """The async version of :meth:`send_message` (``async for`` over a stream)."""
        message, config, client = self._prepare(
            content, generation_config, safety_settings, tools, tool_config, request_options
        )
        achat = (
            self._async_chat()
            if client is None
            else client.aio.chats.get(self.id, config=self._config)
        )
        chat = self._chat
        turns_before = len(chat._conversation.history.turns)
        if not stream:
            try:
                result = await achat.send_message(message, config=config)
            except _FunctionRaised as raised:
                self._close_raised_turn(raised)
                raise raised.error from None
            chat.refresh()
            self._record_stop(result, turns_before)
            response = AsyncGenerateContentResponse(result)
            self._last, self._last_taken = response, False
            return response
        response = AsyncGenerateContentResponse(
            None,
            chunks=await achat.send_message_stream(message, config=config),
            final=lambda: achat.last,
            on_done=self._stream_ended,
        )
        self._open = response
        self._open_sent = _sent_content(message)
        try:
            await response._apull()
        except BaseException:
            self._open = self._broken = None
            raise
        first = response._chunks[0] if response._chunks else None
        feedback = first.prompt_feedback if first is not None else None
        if feedback is not None and feedback.block_reason is not None:
            self._open = None
            with contextlib.suppress(Exception):
                await response.resolve()
            chat.refresh()
            self._broken = None
            self._record_stop(_LedgerResponse(prompt_feedback=feedback), turns_before)
        self._last, self._last_taken = response, False
        return response

    # ----------------------------------------------------------------- state

    @property
    def history(self) -> list[Content]:
        """The full history: every completed turn, function calling steps included.

        A list: changing it (``chat.history[-1] = ...``, ``append`` ...) replaces the
        session's history (a ``history_replaced`` event), as in google.generativeai.
        Raises :class:`IncompleteIterationError` while a streamed response is
        unfinished, and :class:`BrokenResponseError` after a broken stream (until
        ``rewind()``).
        """
        self._check_idle("reading the history")
        self._check_whole()
        self._chat.refresh()
        self._last_taken = True  # as google.generativeai: last is now in the history
        return _HistoryList(_legacy_contents(self._chat.get_history()), self, self._chat.version)

    @history.setter
    def history(self, history: Iterable[Any]) -> None:
        """Replace the whole history: recorded as a ``history_replaced`` event."""
        self._check_idle("setting the history")
        wire = _history(history)
        conversation = self._chat._conversation
        for _ in range(20):
            conversation.wait_for_turn()
            try:
                conversation.append([HistoryReplaced(history=wire)])
            except ConcurrencyError:
                continue
            break
        else:
            raise ConversationBusyError(
                f"conversation {self.id} is being written too fast to replace its history; try again"
            )
        self._last, self._last_taken = None, True
        self._broken = None

    @property
    def last(self) -> GenerateContentResponse | None:
        """The last response this session received (a streamed one while it streams, or
        a broken one), as google.generativeai: None once ``history`` has been read after
        it (the response is then part of the history), after a rewind or a history
        change, and in a new session with no reply yet. A session resumed from the log
        (``resume_chat``) starts with the conversation's last response."""
        if self._open is not None:
            return self._open
        if self._broken is not None:
            return self._broken.response
        if self._last_taken:
            return None
        if self._last is not None:
            return self._last
        self._chat.refresh()
        recorded = self._chat.last
        return GenerateContentResponse(recorded) if recorded is not None else None

    def rewind(self) -> tuple[Content, Content]:
        """Take back the last turn: returns its (user content, last model content).
        The turn stays in the log, followed by a ``turn_rewound`` event.

        After a broken stream, takes back that turn only (a turn that failed never
        entered the history: nothing is recorded). Raises :class:`EmptyHistoryError`
        (an ``IndexError``) on an empty history, and :class:`IncompleteIterationError`
        while a streamed response is unfinished.
        """
        self._check_idle("rewinding")
        broken = self._broken
        if broken is not None:
            self._broken = None
            self._last, self._last_taken = None, True
            if broken.recorded:
                user, model = self._chat.rewind()
                return user, _legacy_contents([model])[0]
            received = broken.response.result
            candidates = received.candidates or []
            content = candidates[0].content if candidates else None
            return broken.sent, _legacy_contents([content or Content(role="model", parts=[])])[0]
        self._chat.refresh()
        state = self._chat._conversation.history
        if len(state.full) < 2:
            holds = "is empty" if not state.full else "holds one content"
            raise EmptyHistoryError(
                f"ChatSession.rewind(): the history of conversation {self.id} {holds}; there "
                "is no request/response pair to take back"
            )
        if state.turns and state.turns[-1].full == 2:
            # The last turn is the pair: a turn_rewound event takes it back.
            user, model = self._chat.rewind()
        else:
            # As google.generativeai, the last two contents, whatever turn they are part
            # of (the answer of an automatic function calling turn and the function
            # response before it, say): the rest becomes the history.
            user, model = (content_from_wire(content) for content in state.full[-2:])
            self.history = [content_from_wire(content) for content in state.full[:-2]]
        self._last, self._last_taken = None, True
        return _legacy_contents([user, model])  # type: ignore[return-value]


def _sent_content(message: Any) -> Content:
    """The content a message is recorded as (for a broken stream's ``rewind()``)."""
    from .client._convert import message_to_content

    return Content.model_validate(message_to_content(message))
