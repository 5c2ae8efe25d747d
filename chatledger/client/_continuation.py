"""Automatic continuation of a streamed answer across hops (docs/chat-api.md#continuation).

A port, on wire chunks, of google-genai 3.3.0's ``StreamContinuation``: a stream is one
or more hops (requests); a hop that ends with ``CONTINUATION`` and a token, or breaks
(an error or an early end) after a checkpoint token, is resumed by the next hop with
that token. The chunks the caller sees have the intermediate ``CONTINUATION`` finish
reason cleared, and their ``usageMetadata`` is the usage of every earlier hop plus this
hop's. The log records each hop as it came (see :meth:`Conversation.record_response`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import APIError
from ..projections.continuation import (
    is_resumable_finish_reason,
    merge_hops,
    token_text,
)

__all__ = ["MAX_STREAM_RECONNECTS_WITHOUT_PROGRESS", "HopOutcome", "StreamHops"]

#: Consecutive reconnects without a new checkpoint before the error is raised (as
#: google-genai).
MAX_STREAM_RECONNECTS_WITHOUT_PROGRESS = 3


def _can_resume(enabled: bool, token: str | None, reason: Any, feedback: bool = False) -> bool:
    return bool(enabled and token and not feedback and is_resumable_finish_reason(reason))


@dataclasses.dataclass
class _Hop:
    start_token: str | None = None
    token: str | None = None
    finish_reason: Any = None
    has_prompt_feedback: bool = False
    has_yielded_content: bool = False
    received_any_chunk: bool = False
    usage: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class HopOutcome:
    """How a hop ended: resume with ``token``, raise ``error``, or done (neither)."""

    token: str | None = None
    error: BaseException | None = None


class StreamHops:
    """The state of one streamed model call across its continuation hops."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._usage: dict[str, Any] | None = None
        self._resume: str | None = None
        self._reconnects = 0
        self._last_error: BaseException | None = None
        self._hop = _Hop()
        #: The first hop's prompt tokens, once a hop reported usage.
        self.initial_prompt_tokens: int | None = None

    def start_hop(self) -> str | None:
        """Start a hop; return the token to send it with (None for the first)."""
        self._hop = _Hop(start_token=self._resume)
        return self._resume

    def observe(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """Note one wire chunk; return the chunk the caller sees."""
        hop = self._hop
        hop.received_any_chunk = True
        if chunk.get("promptFeedback") is not None:
            hop.has_prompt_feedback = True
        candidates = chunk.get("candidates")
        if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
            candidate = candidates[0]
            content = candidate.get("content")
            if isinstance(content, dict) and content.get("parts"):
                hop.has_yielded_content = True
            reason = candidate.get("finishReason")
            if reason:
                hop.finish_reason = reason
            token = token_text(candidate.get("continuationToken"))
            if token:
                hop.token = token
            elif reason and not is_resumable_finish_reason(reason):
                hop.token = None
            if reason and _can_resume(self.enabled, hop.token, reason):
                cleared = {k: v for k, v in candidate.items() if k != "finishReason"}
                chunk = {**chunk, "candidates": [cleared, *candidates[1:]]}
        usage = chunk.get("usageMetadata")
        if isinstance(usage, dict):
            if self._usage is not None:
                merged = merge_hops([{"usageMetadata": self._usage}, {"usageMetadata": usage}])[
                    "usageMetadata"
                ]
                chunk = {**chunk, "usageMetadata": merged}
                hop.usage = merged
            else:
                hop.usage = usage
                count = usage.get("promptTokenCount")
                if self.initial_prompt_tokens is None and isinstance(count, int):
                    self.initial_prompt_tokens = count
        return chunk

    def end_hop(self, error: BaseException | None = None) -> HopOutcome:
        """End the hop (``error``: what broke it). As google-genai: resume from the
        latest checkpoint when the answer is not over; a hop that broke before any
        checkpoint or content of its own is retried from its start token, three times
        at most; a server's refusal before the first chunk is raised at once."""
        hop = self._hop
        if hop.usage is not None:
            self._usage = hop.usage
        if isinstance(error, APIError) and not hop.received_any_chunk:
            return HopOutcome(error=error)
        made_progress = hop.has_yielded_content or bool(hop.token and hop.token != hop.start_token)
        if error is not None:
            self._last_error = error
        elif made_progress:
            self._last_error = None
        self._resume, self._reconnects = self._next_resume_token()
        if _can_resume(self.enabled, self._resume, hop.finish_reason, hop.has_prompt_feedback):
            return HopOutcome(token=self._resume)
        if error is not None:
            return HopOutcome(error=error)
        gave_up = hop.finish_reason is None and not hop.has_prompt_feedback
        if gave_up and self._last_error is not None:
            return HopOutcome(error=self._last_error)
        return HopOutcome()

    def _next_resume_token(self) -> tuple[str | None, int]:
        hop = self._hop
        reconnects = self._reconnects
        if hop.finish_reason is not None or hop.has_prompt_feedback:
            if (
                isinstance(hop.finish_reason, str)
                and hop.finish_reason.upper() == "CONTINUATION"
                and not hop.has_prompt_feedback
                and hop.token
                and hop.token != hop.start_token
            ):
                return hop.token, 0
            return None, 0
        if hop.token and hop.token != hop.start_token:
            return hop.token, 0
        if hop.has_yielded_content or reconnects >= MAX_STREAM_RECONNECTS_WITHOUT_PROGRESS:
            return None, reconnects
        return hop.start_token, reconnects + 1
