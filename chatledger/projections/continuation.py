"""Automatic continuation on wire responses: when a reply continues, and how its hops
merge into one (docs/chat-api.md#continuation).

A model may pause a long answer with ``finishReason: CONTINUATION`` and a
``continuationToken`` on its first candidate; the next request (the same contents, with
the token) resumes it. Each such request is a *hop*. The hops' responses merge into the
one reply the turn records, as google-genai 3.3.0 merges them
(``_extra_utils.merge_continuation_responses``):

- candidates merge element-wise; a candidate's ``continuationToken``, ``finishReason``
  and ``finishMessage`` are the last hop's (absent when it has none);
- numbers named ``...Count`` / ``...Sum`` (token counts, log probability sums) add up;
- per-modality token lists (``...TokensDetails``) add up by modality; ``safetyRatings``
  keep one rating per category, the latest;
- other lists (content parts, citations, grounding chunks, ...) are concatenated, each
  hop's items kept as they are; grounding supports are shifted to point at the merged
  parts and chunks;
- objects merge field by field; any other value is the last hop's that has one.

Everything works on wire dicts (camelCase) and is deterministic, so the history
projection merges a turn's recorded hops the same way the live chat did.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeGuard

__all__ = [
    "continuation_enabled",
    "continuation_token",
    "initial_prompt_token_count",
    "is_resumable_finish_reason",
    "merge_hops",
    "token_text",
]

_TERMINAL = ("continuationToken", "finishReason", "finishMessage")
# chatledger.types.MAX_CONTINUATION_TOKEN_BYTES: a longer token is never followed (the
# response carrying it is refused as invalid).
_MAX_TOKEN_BYTES = 64 * 1024
_MAX_TOKEN_TEXT = 4 * (_MAX_TOKEN_BYTES + 2) // 3 + 4


def continuation_enabled(config: dict[str, Any] | None) -> bool:
    """False only when the (merged, wire) config sets ``automaticContinuation: false``."""
    if not config:
        return True
    value = config.get("automaticContinuation")
    return True if value is None else bool(value)


def is_resumable_finish_reason(reason: Any) -> bool:
    """A hop can be resumed when it ended without a finish reason or with CONTINUATION."""
    return reason is None or (isinstance(reason, str) and reason.upper() == "CONTINUATION")


def _first_candidate(response: dict[str, Any]) -> dict[str, Any] | None:
    candidates = response.get("candidates")
    if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
        return candidates[0]
    return None


def token_text(token: Any) -> str | None:
    """A wire token as google-genai sends it back: URL-safe base64 of its bytes.

    Returns None for a value that is not base64 text (such a token cannot be sent)."""
    if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_TEXT:
        return None
    padded = token + "=" * (-len(token) % 4)
    try:
        raw = (
            base64.urlsafe_b64decode(padded)
            if "-" in token or "_" in token
            else base64.b64decode(padded, validate=True)
        )
    except (binascii.Error, ValueError):
        return None
    if not raw or len(raw) > _MAX_TOKEN_BYTES:
        return None
    return base64.urlsafe_b64encode(raw).decode("ascii")


def continuation_token(response: dict[str, Any]) -> str | None:
    """The token to resume ``response`` with (as it is sent), or None when it is done.

    As google-genai's ``should_continue_generation``: the first candidate has a token,
    and its finish reason is CONTINUATION or absent."""
    candidate = _first_candidate(response)
    if candidate is None or not is_resumable_finish_reason(candidate.get("finishReason")):
        return None
    return token_text(candidate.get("continuationToken"))


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _sums(key: str) -> bool:
    return key == "tokenCount" or key.endswith("Count") or key.endswith("Sum")


def _merge_modalities(prev: list[Any], curr: list[Any]) -> list[Any]:
    counts: dict[Any, int | float] = {}
    order: list[Any] = []
    for item in prev + curr:
        if not isinstance(item, dict):
            continue
        modality = item.get("modality")
        if modality not in counts:
            counts[modality] = 0
            order.append(modality)
        count = item.get("tokenCount")
        counts[modality] += count if _is_number(count) else 0
    return [
        {"modality": modality, "tokenCount": counts[modality]}
        if modality is not None
        else {"tokenCount": counts[modality]}
        for modality in order
    ]


def _merge_safety_ratings(prev: list[Any], curr: list[Any]) -> list[Any]:
    by_category: dict[Any, Any] = {}
    order: list[Any] = []
    for rating in prev + curr:
        category = rating.get("category") if isinstance(rating, dict) else None
        if category not in by_category:
            order.append(category)
        by_category[category] = rating
    return [by_category[category] for category in order]


def _shift_grounding(prev: dict[str, Any], curr: dict[str, Any]) -> dict[str, Any]:
    """curr's grounding supports, pointing into the merged parts and chunks."""
    grounding = curr.get("groundingMetadata")
    supports = grounding.get("groundingSupports") if isinstance(grounding, dict) else None
    if not isinstance(grounding, dict) or not isinstance(supports, list) or not supports:
        return curr
    prev_content = prev.get("content")
    prev_parts = prev_content.get("parts") if isinstance(prev_content, dict) else None
    part_offset = len(prev_parts) if isinstance(prev_parts, list) else 0
    prev_grounding = prev.get("groundingMetadata")
    prev_chunks = (
        prev_grounding.get("groundingChunks") if isinstance(prev_grounding, dict) else None
    )
    chunk_offset = len(prev_chunks) if isinstance(prev_chunks, list) else 0
    if not part_offset and not chunk_offset:
        return curr
    shifted: list[Any] = []
    for support in supports:
        if not isinstance(support, dict):
            shifted.append(support)
            continue
        support = dict(support)
        indices = support.get("groundingChunkIndices")
        if chunk_offset and isinstance(indices, list) and indices:
            support["groundingChunkIndices"] = [
                index + chunk_offset if _is_number(index) else index for index in indices
            ]
        segment = support.get("segment")
        if part_offset and isinstance(segment, dict):
            index = segment.get("partIndex")
            support["segment"] = {
                **segment,
                "partIndex": (index if _is_number(index) else 0) + part_offset,
            }
        shifted.append(support)
    return {**curr, "groundingMetadata": {**grounding, "groundingSupports": shifted}}


def _merge_candidates(prev: list[Any], curr: list[Any]) -> list[Any]:
    if not prev:
        return curr
    if not curr:
        return [_merge_objects(p, {}, candidate=True) if isinstance(p, dict) else p for p in prev]
    merged = [
        _merge_objects(p, c, candidate=True) if isinstance(p, dict) and isinstance(c, dict) else c
        for p, c in zip(prev, curr, strict=False)
    ]
    return merged + prev[len(curr) :] + curr[len(prev) :]


def _merge_values(key: str, prev: Any, curr: Any) -> Any:
    if curr is None:
        return prev
    if prev is None:
        return curr
    if isinstance(prev, dict) and isinstance(curr, dict):
        return _merge_objects(prev, curr)
    if _is_number(prev) and _is_number(curr) and _sums(key):
        return prev + curr
    if isinstance(prev, list) and isinstance(curr, list):
        if key.endswith("TokensDetails"):
            return _merge_modalities(prev, curr)
        if key == "safetyRatings":
            return _merge_safety_ratings(prev, curr)
        return prev + curr
    return curr


def _merge_objects(
    prev: dict[str, Any], curr: dict[str, Any], *, candidate: bool = False
) -> dict[str, Any]:
    if candidate:
        curr = _shift_grounding(prev, curr)
    merged: dict[str, Any] = {}
    for key in [*prev, *(k for k in curr if k not in prev)]:
        if candidate and key in _TERMINAL:
            if curr.get(key) is not None:
                merged[key] = curr[key]
            continue
        if key == "candidates" and not candidate and isinstance(prev.get(key), list):
            value = curr.get(key)
            merged[key] = _merge_candidates(prev[key], value if isinstance(value, list) else [])
            continue
        value = _merge_values(key, prev.get(key), curr.get(key))
        if value is not None:
            merged[key] = value
    return merged


def merge_hops(responses: list[dict[str, Any]]) -> dict[str, Any]:
    """The one response a continued answer's hops make (the first alone when one)."""
    if not responses:
        return {}
    merged = responses[0]
    for response in responses[1:]:
        merged = _merge_objects(merged, response)
    return merged


def initial_prompt_token_count(responses: list[dict[str, Any]]) -> int | None:
    """The first hop's prompt token count (the first a hop reports)."""
    for response in responses:
        usage = response.get("usageMetadata")
        count = usage.get("promptTokenCount") if isinstance(usage, dict) else None
        if _is_number(count):
            return int(count)
    return None
