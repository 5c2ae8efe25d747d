"""Retrying model calls: exponential backoff with jitter, honouring ``Retry-After``.

Off by default, as in google-genai: give ``http_options.retry_options``
(:class:`~chatledger.types.HttpRetryOptions`) to turn it on. The defaults are
google-genai's: 5 attempts in all, 1 s initial delay doubling up to 60 s, up to 1 s of
random jitter, and HTTP 408, 429, 500, 502, 503 and 504 retried, as are connection
errors and timeouts. A server's ``Retry-After`` (seconds or an HTTP date) is waited for
instead when it asks for longer, up to the maximum delay.

Every attempt is an event: a retried failure is a ``model_call_failed`` that does not end
the turn, followed by a new ``model_call_started`` with the next attempt number.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from typing import Any

from ..errors import APIError, ModelConnectionError
from ..types import HttpRetryOptions

__all__ = ["RetryPolicy"]

DEFAULT_ATTEMPTS = 5
DEFAULT_INITIAL_DELAY = 1.0
DEFAULT_MAX_DELAY = 60.0
DEFAULT_EXP_BASE = 2.0
DEFAULT_JITTER = 1.0
DEFAULT_STATUS_CODES = (408, 429, 500, 502, 503, 504)


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


class RetryPolicy:
    """When to retry a failed model call, and how long to wait first."""

    def __init__(self, options: HttpRetryOptions) -> None:
        self.attempts = max(1, int(_or(options.attempts, DEFAULT_ATTEMPTS)))
        self.initial_delay = float(_or(options.initial_delay, DEFAULT_INITIAL_DELAY))
        self.max_delay = float(_or(options.max_delay, DEFAULT_MAX_DELAY))
        self.exp_base = float(_or(options.exp_base, DEFAULT_EXP_BASE))
        self.jitter = float(_or(options.jitter, DEFAULT_JITTER))
        self.status_codes = tuple(options.http_status_codes or DEFAULT_STATUS_CODES)
        numbers = (self.initial_delay, self.max_delay, self.exp_base, self.jitter)
        if not all(math.isfinite(number) and number >= 0 for number in numbers):
            raise ValueError(
                "retry delays, exp_base and jitter must be finite numbers, not negative"
            )

    @classmethod
    def from_options(cls, options: HttpRetryOptions | None) -> RetryPolicy | None:
        return cls(options) if options is not None else None

    def retryable(self, error: BaseException) -> bool:
        if isinstance(error, APIError):
            return error.code in self.status_codes
        return isinstance(error, ModelConnectionError)

    def delay(self, error: BaseException, attempt: int) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None to give up."""
        if attempt >= self.attempts or not self.retryable(error):
            return None
        # tenacity's wait_exponential_jitter, as google-genai uses it (which also caps the
        # exponential at the maximum before it overflows).
        try:
            exponential = self.initial_delay * self.exp_base ** (attempt - 1)
        except OverflowError:
            exponential = math.inf
        wait = min(exponential, self.max_delay) + random.uniform(0, self.jitter)
        asked = retry_after(error)
        if asked is not None:
            wait = max(wait, asked)
        return max(0.0, min(wait, self.max_delay))


def retry_after(error: BaseException) -> float | None:
    """The seconds a server's ``Retry-After`` header asks for, if it sent one."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if not isinstance(headers, dict):
        return None
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
