"""Gemini <-> OpenAI chat completions: the translation the OpenAI-compatible transport does.

Requests go from the Gemini wire form (contents, ``systemInstruction``,
``generationConfig``, ``tools``, ``toolConfig``) to a ``/chat/completions`` body; answers
(a ``chat.completion``, ``chat.completion.chunk`` events, error bodies of OpenAI, vLLM,
Ollama, FastAPI or an HTML page) come back as Gemini wire responses, chunks and error
bodies. No I/O here: :mod:`.openai` sends and reads.

What the translation loses or approximates (the two protocols do not match one to one):

- Text parts of one content are joined into one message: with ``"\\n"`` for user and
  system contents, with nothing for model contents (their parts are pieces of one reply).
- Model ``thought`` parts are not sent back; a response's ``reasoning_content`` comes back
  as a ``thought`` text part. Only image ``inlineData``/``fileData`` can be sent; other
  parts (code execution, videos, documents) raise :class:`InvalidInputError`.
- A user content's ``functionResponse`` parts go first, as ``tool`` messages (the protocol
  wants them right after the assistant message that called), then its other parts.
- A ``functionCall`` without an ``id`` gets a deterministic one (``call_<content>_<part>``)
  and the ``functionResponse`` that answers it (matched by name, in order) is sent with it.
- Only ``functionDeclarations`` tools can be sent. A Gemini ``parameters`` Schema becomes
  JSON Schema (lowercase types, ``nullable`` as a ``"null"`` type; ``propertyOrdering``
  dropped). ``ANY`` with several ``allowedFunctionNames`` sends only those tools with
  ``tool_choice: "required"``; ``allowedFunctionNames`` with ``AUTO`` is not expressible and
  is ignored.
- ``generationConfig``: ``temperature``, ``topP``, ``maxOutputTokens`` (``max_tokens``),
  ``stopSequences``, ``seed``, ``candidateCount`` (``n``), ``presencePenalty``,
  ``frequencyPenalty``, ``responseMimeType``/``responseJsonSchema``/``responseSchema``
  (``response_format``) are sent; ``topK`` is sent as ``top_k``, an extension that vLLM,
  llama.cpp and Ollama accept but OpenAI does not. Everything else (``thinkingConfig``,
  ``safetySettings``, ...) is not sent.
- Finish reasons: ``stop`` and ``tool_calls`` become ``STOP``, ``length`` ``MAX_TOKENS``,
  ``content_filter`` ``SAFETY``, anything else ``OTHER``. A server that does not report
  usage for streams (llama.cpp's) gives chunks without ``usageMetadata``.
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from ...errors import APIError, InvalidInputError, InvalidResponseError, ModelConnectionError
from ._wire import json_text, part_kind
from .base import ModelRequest

__all__ = [
    "DONE",
    "StreamTranslator",
    "chat_messages",
    "chat_request",
    "error_body",
    "json_schema_from_gemini",
    "raise_body_error",
    "response_from_openai",
]

_FINISH_REASONS = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "tool_calls": "STOP",
    "function_call": "STOP",
    "content_filter": "SAFETY",
}

# HTTP statuses as the Gemini API names them, for error bodies that carry no type.
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    422: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

#: The data of the event that ends an OpenAI stream.
DONE = "[DONE]"


# --------------------------------------------------------------------------- requests


def _model_name(model: str) -> str:
    name = model.strip()
    if name.lower().startswith("openai/"):
        name = name[len("openai/") :]
    if not name:
        raise InvalidInputError(f"invalid model name {model!r}: name the server's model")
    return name


def _image_url(part: dict[str, Any]) -> dict[str, Any] | None:
    """An image part as an OpenAI ``image_url`` content part; None when not an image."""
    inline = part.get("inlineData")
    if isinstance(inline, dict):
        mime_type = str(inline.get("mimeType") or "")
        if not mime_type.startswith("image/"):
            return None
        data = str(inline.get("data") or "")
        # Wire bytes are URL-safe base64; data URLs want the standard alphabet.
        data = data.replace("-", "+").replace("_", "/")
        data += "=" * (-len(data) % 4)
        return {"type": "image_url", "image_url": {"url": f"data:{mime_type};base64,{data}"}}
    file_data = part.get("fileData")
    if isinstance(file_data, dict):
        uri = str(file_data.get("fileUri") or "")
        mime_type = str(file_data.get("mimeType") or "")
        if mime_type.startswith("image/") and uri.startswith(("http://", "https://", "data:")):
            return {"type": "image_url", "image_url": {"url": uri}}
    return None


def _text_of(content: Any) -> str:
    """The plain text of a system instruction (a content, a part list or a string)."""
    if isinstance(content, str):
        return content
    parts = content.get("parts") if isinstance(content, dict) else content
    texts = []
    for part in parts or []:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            texts.append(part["text"])
        else:
            raise InvalidInputError(
                f"a system instruction can only hold text here, got a part with {part_kind(part)}"
            )
    return "\n".join(texts)


def chat_messages(
    contents: list[dict[str, Any]], system_instruction: Any = None
) -> list[dict[str, Any]]:
    """Gemini wire contents (and system instruction) as OpenAI chat messages."""
    messages: list[dict[str, Any]] = []
    if system_instruction:
        messages.append({"role": "system", "content": _text_of(system_instruction)})
    # Calls of the last model content still waiting for their response, by name.
    waiting: dict[str, list[str]] = {}
    for content_index, content in enumerate(contents):
        if not isinstance(content, dict):
            raise InvalidInputError(f"contents[{content_index}] is not a content: {content!r}")
        parts = content.get("parts") or []
        if content.get("role") == "model":
            message, waiting = _assistant_message(content_index, parts)
            messages.append(message)
        else:
            messages.extend(_user_messages(content_index, parts, waiting))
            waiting = {}
    return messages


def _assistant_message(
    content_index: int, parts: list[Any]
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    waiting: dict[str, list[str]] = {}
    for part_index, part in enumerate(parts):
        if not isinstance(part, dict):
            raise InvalidInputError(f"contents[{content_index}] has a part that is not an object")
        call = part.get("functionCall")
        if isinstance(call, dict):
            name = call.get("name")
            if not isinstance(name, str) or not name:
                raise InvalidInputError(
                    f"contents[{content_index}] has a functionCall without a name"
                )
            call_id = call.get("id") or f"call_{content_index}_{part_index}"
            tool_calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": json_text(call.get("args") or {})},
                }
            )
            waiting.setdefault(name, []).append(str(call_id))
        elif isinstance(part.get("text"), str):
            if not part.get("thought"):
                texts.append(part["text"])
        elif part.get("thoughtSignature") is not None and part_kind(part) == "empty part":
            continue
        else:
            raise InvalidInputError(
                f"contents[{content_index}]: the OpenAI-compatible transport cannot send a "
                f"model part with {part_kind(part)}"
            )
    # Always a string: llama.cpp's server answers HTTP 500 to content null beside
    # tool_calls (and its chat templates break when content is left out).
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message, waiting


def _user_messages(
    content_index: int, parts: list[Any], waiting: dict[str, list[str]]
) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    texts: list[str] = []
    pieces: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, str):
            part = {"text": part}
        if not isinstance(part, dict):
            raise InvalidInputError(f"contents[{content_index}] has a part that is not an object")
        reply = part.get("functionResponse")
        if isinstance(reply, dict):
            name = str(reply.get("name") or "")
            call_id = reply.get("id")
            if call_id is not None:
                ids = waiting.get(name, [])
                if call_id in ids:
                    ids.remove(call_id)
            elif waiting.get(name):
                call_id = waiting[name].pop(0)
            else:
                raise InvalidInputError(
                    f"contents[{content_index}] has a functionResponse for {name!r} that answers "
                    "no functionCall of the model content before it"
                )
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": str(call_id),
                    "content": json_text(reply.get("response") or {}),
                }
            )
        elif isinstance(part.get("text"), str):
            texts.append(part["text"])
            pieces.append({"type": "text", "text": part["text"]})
        else:
            image = _image_url(part)
            if image is None:
                raise InvalidInputError(
                    f"contents[{content_index}]: the OpenAI-compatible transport can send text, "
                    f"images and function responses, not a part with {part_kind(part)}"
                )
            pieces.append(image)
    if len(pieces) > len(texts):
        messages.append({"role": "user", "content": pieces})
    elif texts or not messages:
        messages.append({"role": "user", "content": "\n".join(texts)})
    return messages


_SCHEMA_TYPES = {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT", "NULL"}


_SCHEMA_KEYS: dict[str, str] = {
    "any_of": "anyOf",
    "property_ordering": "propertyOrdering",
    "additional_properties": "additionalProperties",
    "max_items": "maxItems",
    "min_items": "minItems",
    "max_length": "maxLength",
    "min_length": "minLength",
    "max_properties": "maxProperties",
    "min_properties": "minProperties",
}


def json_schema_from_gemini(schema: Any) -> Any:
    """A Gemini ``Schema`` (uppercase types, ``nullable``) as JSON Schema."""
    if isinstance(schema, list):
        return [json_schema_from_gemini(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result: dict[str, Any] = {}
    for given, value in schema.items():
        # google-genai sends multi-word schema fields by their Python names (any_of).
        key = str(_SCHEMA_KEYS.get(given, given))
        if value is None or key in ("propertyOrdering", "nullable"):
            continue
        if key == "type":
            name = str(value).upper()
            if name in _SCHEMA_TYPES:
                result["type"] = name.lower()
        elif key == "format" and value == "enum":
            continue
        elif key == "properties" and isinstance(value, dict):
            result["properties"] = {
                name: json_schema_from_gemini(sub) for name, sub in value.items()
            }
        elif key in ("items", "anyOf"):
            result[key] = json_schema_from_gemini(value)
        elif key == "example":
            result["examples"] = [value]
        else:
            result[key] = value
    if schema.get("nullable") is True:
        if isinstance(result.get("type"), str):
            result["type"] = [result["type"], "null"]
        elif "anyOf" in result:
            result["anyOf"] = [*result["anyOf"], {"type": "null"}]
    return result


def _tools(tools: Any, allowed: list[str] | None) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for tool in tools or []:
        if not isinstance(tool, dict):
            raise InvalidInputError(f"a tool must be an object, got {type(tool).__name__}")
        for key, value in tool.items():
            if key != "functionDeclarations" and value is not None:
                raise InvalidInputError(
                    f"the OpenAI-compatible transport can only send function declarations, not {key!r}"
                )
        for declaration in tool.get("functionDeclarations") or []:
            name = declaration.get("name") if isinstance(declaration, dict) else None
            if not isinstance(name, str) or not name:
                raise InvalidInputError("a function declaration needs a name")
            if allowed is not None and name not in allowed:
                continue
            if declaration.get("parametersJsonSchema") is not None:
                parameters = declaration["parametersJsonSchema"]
            elif declaration.get("parameters") is not None:
                parameters = json_schema_from_gemini(declaration["parameters"])
            else:
                parameters = {"type": "object", "properties": {}}
            function: dict[str, Any] = {"name": name, "parameters": parameters}
            if declaration.get("description"):
                function["description"] = declaration["description"]
            result.append({"type": "function", "function": function})
    return result


def _tool_choice(tool_config: Any) -> tuple[Any, list[str] | None]:
    """(``tool_choice``, the function names to send or None for all) for a toolConfig."""
    calling = tool_config.get("functionCallingConfig") if isinstance(tool_config, dict) else None
    if not isinstance(calling, dict):
        return None, None
    mode = str(calling.get("mode") or "AUTO").upper()
    allowed = calling.get("allowedFunctionNames") or None
    if mode in ("AUTO", "VALIDATED", "MODE_UNSPECIFIED"):
        return "auto", None
    if mode == "NONE":
        return "none", None
    if mode == "ANY":
        if allowed and len(allowed) == 1:
            return {"type": "function", "function": {"name": allowed[0]}}, None
        return "required", list(allowed) if allowed else None
    raise InvalidInputError(f"unknown function calling mode {mode!r}")


def _response_format(generation: dict[str, Any]) -> dict[str, Any] | None:
    schema = generation.get("responseJsonSchema")
    if schema is None and generation.get("responseSchema") is not None:
        schema = json_schema_from_gemini(generation["responseSchema"])
    mime_type = generation.get("responseMimeType")
    if schema is not None:
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    if mime_type in (None, "text/plain"):
        return None
    if mime_type == "application/json":
        return {"type": "json_object"}
    raise InvalidInputError(
        f"the OpenAI-compatible transport cannot ask for responseMimeType {mime_type!r}"
    )


_GENERATION_FIELDS = {
    "temperature": "temperature",
    "topP": "top_p",
    "topK": "top_k",
    "maxOutputTokens": "max_tokens",
    "seed": "seed",
    "presencePenalty": "presence_penalty",
    "frequencyPenalty": "frequency_penalty",
}


def chat_request(request: ModelRequest, *, stream: bool) -> dict[str, Any]:
    """The ``/chat/completions`` body for a request."""
    config = request.config
    body: dict[str, Any] = {
        "model": _model_name(request.model),
        "messages": chat_messages(request.contents, config.get("systemInstruction")),
    }
    generation = config.get("generationConfig") or {}
    for name, openai_name in _GENERATION_FIELDS.items():
        if generation.get(name) is not None:
            body[openai_name] = generation[name]
    if generation.get("stopSequences"):
        body["stop"] = list(generation["stopSequences"])
    if generation.get("candidateCount") not in (None, 1):
        body["n"] = generation["candidateCount"]
    response_format = _response_format(generation)
    if response_format is not None:
        body["response_format"] = response_format
    if config.get("tools"):
        choice, allowed = _tool_choice(config.get("toolConfig"))
        tools = _tools(config["tools"], allowed)
        if tools:
            body["tools"] = tools
            if choice is not None:
                body["tool_choice"] = choice
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


# --------------------------------------------------------------------------- responses


def _finish_reason(reason: Any) -> str:
    return _FINISH_REASONS.get(str(reason), "OTHER")


def _usage_metadata(usage: Any) -> dict[str, int] | None:
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    details = usage.get("completion_tokens_details")
    reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
    thoughts = reasoning if isinstance(reasoning, int) and 0 < reasoning <= completion else 0
    metadata = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": completion - thoughts,
        "totalTokenCount": usage["total_tokens"]
        if isinstance(usage.get("total_tokens"), int)
        else prompt + completion,
    }
    if thoughts:
        metadata["thoughtsTokenCount"] = thoughts
    prompt_details = usage.get("prompt_tokens_details")
    cached = prompt_details.get("cached_tokens") if isinstance(prompt_details, dict) else None
    if isinstance(cached, int) and cached > 0:
        metadata["cachedContentTokenCount"] = cached
    return metadata


def _function_call(name: Any, arguments: Any, call_id: Any) -> dict[str, Any]:
    if not isinstance(name, str) or not name:
        raise InvalidResponseError("the server sent a tool call without a function name")
    if isinstance(arguments, dict):
        args = arguments
    else:
        if arguments is not None and not isinstance(arguments, str):
            raise InvalidResponseError(
                f"the arguments of the tool call {name!r} are a JSON "
                f"{type(arguments).__name__}, not a string or an object"
            )
        text = arguments or ""
        try:
            args = msgspec.json.decode(text) if text.strip() else {}
        except (msgspec.DecodeError, RecursionError):
            raise InvalidResponseError(
                f"the arguments of the tool call {name!r} are not valid JSON: {text[:200]!r}"
            ) from None
        if not isinstance(args, dict):
            raise InvalidResponseError(
                f"the arguments of the tool call {name!r} are not a JSON object: {text[:200]!r}"
            )
    call: dict[str, Any] = {"name": name, "args": args}
    if call_id:
        call["id"] = _call_id(call_id)
    return {"functionCall": call}


def _call_id(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidResponseError(
            f"the server sent a tool call whose id is a JSON {type(value).__name__}, not a string"
        )
    return value


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers answer with content parts
        texts = []
        for piece in content:
            text = piece.get("text") if isinstance(piece, dict) else None
            if text is not None and not isinstance(text, str):
                raise InvalidResponseError(
                    f"the server sent a content part whose text is a JSON {type(text).__name__}"
                )
            texts.append(text or "")
        return "".join(texts)
    if content is not None:
        raise InvalidResponseError(
            f"the server sent message content that is a JSON {type(content).__name__}, "
            "not a string or a list of parts"
        )
    return ""


def _reasoning(message: dict[str, Any]) -> str:
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _text_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The thought and text parts of a message or a stream delta."""
    parts: list[dict[str, Any]] = []
    reasoning = _reasoning(message)
    if reasoning:
        parts.append({"text": reasoning, "thought": True})
    text = _content_text(message.get("content"))
    if text:
        parts.append({"text": text})
    return parts


def _candidate(choice: Any, position: int) -> dict[str, Any]:
    if not isinstance(choice, dict):
        raise InvalidResponseError(f"choice {position} is not an object")
    message = choice.get("message")
    if not isinstance(message, dict):
        message = {}
    parts = _text_parts(message)
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise InvalidResponseError("the server sent a tool call without a function")
        parts.append(
            _function_call(function.get("name"), function.get("arguments"), call.get("id"))
        )
    # The legacy function_call field only when there are no tool_calls: llama.cpp's server
    # sends both for one call, which must not run twice.
    legacy = message.get("function_call")
    if isinstance(legacy, dict) and not message.get("tool_calls"):
        parts.append(_function_call(legacy.get("name"), legacy.get("arguments"), None))
    if not any("text" not in part or not part.get("thought") for part in parts):
        parts.append({"text": ""})
    candidate: dict[str, Any] = {
        "content": {"role": "model", "parts": parts},
        "index": choice.get("index", position)
        if isinstance(choice.get("index", position), int)
        else position,
    }
    if choice.get("finish_reason"):
        candidate["finishReason"] = _finish_reason(choice["finish_reason"])
    return candidate


def _response_fields(body: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if isinstance(body.get("model"), str):
        fields["modelVersion"] = body["model"]
    if isinstance(body.get("id"), str):
        fields["responseId"] = body["id"]
    return fields


def response_from_openai(body: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` body as a Gemini wire GenerateContentResponse."""
    raise_body_error(body, 500)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise InvalidResponseError(f"the response has no choices: {json_text(body)[:200]!r}")
    response: dict[str, Any] = {
        "candidates": [_candidate(choice, i) for i, choice in enumerate(choices)]
    }
    usage = _usage_metadata(body.get("usage"))
    if usage is not None:
        response["usageMetadata"] = usage
    response.update(_response_fields(body))
    return response


class _ToolCallDelta:
    """One tool call as its deltas arrive: id and name once, arguments in pieces (joined
    when the call is complete)."""

    __slots__ = ("arguments", "call_id", "name")

    def __init__(self) -> None:
        self.call_id: str | None = None
        self.name = ""
        self.arguments: list[str] = []

    def add(self, call: dict[str, Any]) -> None:
        """Take one delta of this call, refusing fields of the wrong type."""
        if call.get("id"):
            self.call_id = _call_id(call["id"])
        function = call.get("function")
        if not isinstance(function, dict):
            return
        name = function.get("name")
        if name and not self.name:
            if not isinstance(name, str):
                raise InvalidResponseError(
                    f"the server sent a tool call whose name is a JSON {type(name).__name__}"
                )
            self.name = name
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            self.arguments.append(arguments)
        elif isinstance(arguments, dict):  # some servers send objects
            self.arguments.append(json_text(arguments))
        elif arguments is not None:
            raise InvalidResponseError(
                "the server sent tool call arguments that are a JSON "
                f"{type(arguments).__name__}, not a string or an object"
            )


class _ChoiceStream:
    __slots__ = ("finished", "tool_calls")

    def __init__(self) -> None:
        self.tool_calls: dict[int, _ToolCallDelta] = {}
        self.finished = False

    def take_tool_calls(self) -> list[dict[str, Any]]:
        calls = [
            _function_call(call.name, "".join(call.arguments), call.call_id)
            for _, call in sorted(self.tool_calls.items())
        ]
        self.tool_calls = {}
        return calls


class StreamTranslator:
    """Turns ``chat.completion.chunk`` events into Gemini wire chunks.

    Text deltas go out as they come. Tool-call deltas are accumulated by index and go
    out, whole and parsed, with the choice's finish reason. A chunk with a finish
    reason is held back for one event, so that the usage-only event OpenAI sends last
    (``stream_options.include_usage``) lands on it.
    """

    def __init__(self) -> None:
        self._choices: dict[int, _ChoiceStream] = {}
        self._held: list[dict[str, Any]] = []
        self._fields: dict[str, Any] = {}
        self._answered = False
        self.done = False

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        chunks = self._feed(event)
        self._answered = self._answered or bool(chunks) or bool(self._held)
        return chunks

    def _feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        raise_body_error(event, 500)
        self._fields.update(_response_fields(event))
        usage = _usage_metadata(event.get("usage"))
        choices = event.get("choices") or []
        if not isinstance(choices, list):
            raise InvalidResponseError("a stream event's choices are not a list")
        if not choices:
            if usage is None:
                return []
            if self._held:
                self._held[-1]["usageMetadata"] = usage
                return self._release()
            return [{"usageMetadata": usage, **self._fields}]
        out = self._release()
        candidates = []
        finished = False
        for position, choice in enumerate(choices):
            candidate = self._candidate_delta(choice, position)
            if candidate is not None:
                candidates.append(candidate)
                finished = finished or "finishReason" in candidate
        if candidates or usage is not None:
            chunk: dict[str, Any] = {"candidates": candidates} if candidates else {}
            if usage is not None:
                chunk["usageMetadata"] = usage
            chunk.update(self._fields)
            if finished:
                self._held.append(chunk)
            else:
                out.append(chunk)
        return out

    def finish(self) -> list[dict[str, Any]]:
        """The chunks still held when the stream ends (``[DONE]`` or end of body)."""
        out = self._release()
        if not self.done and not any(choice.finished for choice in self._choices.values()):
            raise ModelConnectionError(
                "the stream ended before the server said it was complete (no finish "
                "reason and no [DONE]): the answer was cut short and is not in the "
                "history. Send the message again"
            )
        pending = []
        for index, choice in sorted(self._choices.items()):
            calls = choice.take_tool_calls()
            if calls:
                pending.append({"content": {"role": "model", "parts": calls}, "index": index})
        if pending:
            out.append({"candidates": pending, **self._fields})
        if not out and not self._answered:
            raise InvalidResponseError(
                "the stream ended without any answer (no event held a choice); the server "
                "is at fault: send the message again, and if it keeps happening check the "
                "server"
            )
        return out

    def _release(self) -> list[dict[str, Any]]:
        held, self._held = self._held, []
        return held

    def _candidate_delta(self, choice: Any, position: int) -> dict[str, Any] | None:
        if not isinstance(choice, dict):
            raise InvalidResponseError(f"a stream event's choice {position} is not an object")
        index = choice.get("index", position)
        index = index if isinstance(index, int) else position
        state = self._choices.setdefault(index, _ChoiceStream())
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = {}
        parts = _text_parts(delta)
        for order, call in enumerate(delta.get("tool_calls") or []):
            if not isinstance(call, dict):
                raise InvalidResponseError("a streamed tool call is not an object")
            call_index = call.get("index", order)
            accumulated = state.tool_calls.setdefault(
                call_index if isinstance(call_index, int) else order, _ToolCallDelta()
            )
            accumulated.add(call)
        reason = choice.get("finish_reason")
        if reason:
            state.finished = True
            parts.extend(state.take_tool_calls())
            if not parts:
                parts.append({"text": ""})
        if not parts:
            return None
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": index}
        if reason:
            candidate["finishReason"] = _finish_reason(reason)
        return candidate


# --------------------------------------------------------------------------- errors


def _status_name(status: int, reason_phrase: str = "") -> str:
    if status in _STATUS_NAMES:
        return _STATUS_NAMES[status]
    phrase = reason_phrase or httpx.codes.get_reason_phrase(status)
    return phrase.upper().replace(" ", "_") or "UNKNOWN"


def error_body(status: int, payload: Any, text: str, reason_phrase: str = "") -> dict[str, Any]:
    """Any error body (OpenAI's, vLLM's, Ollama's, FastAPI's, HTML) in Gemini's shape."""
    message: Any = None
    kind: Any = None
    code: Any = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        message, kind, code = error.get("message"), error.get("type"), error.get("code")
    elif isinstance(error, str):
        message = error
    elif isinstance(payload, dict) and "message" in payload:  # vLLM: {"object": "error", ...}
        message, kind, code = payload.get("message"), payload.get("type"), payload.get("code")
    elif isinstance(payload, dict) and "detail" in payload:  # FastAPI validation errors
        message = (
            payload["detail"]
            if isinstance(payload["detail"], str)
            else json_text(payload["detail"])
        )
    if message is None:
        message = text.strip()[:2000] or reason_phrase or _status_name(status)
    body: dict[str, Any] = {
        "code": status,
        "message": str(message),
        "status": kind if isinstance(kind, str) and kind else _status_name(status, reason_phrase),
    }
    if isinstance(code, str) and code:
        body["reason"] = code
    return {"error": body}


def raise_body_error(body: dict[str, Any], default_status: int) -> None:
    """Raise the APIError a 200 body or a stream event carries, if it carries one."""
    error = body.get("error")
    if error is None and body.get("object") != "error":
        return
    code = error.get("code") if isinstance(error, dict) else body.get("code")
    status = code if isinstance(code, int) and 400 <= code < 600 else default_status
    raise APIError.from_status(status, error_body(status, body, ""))
