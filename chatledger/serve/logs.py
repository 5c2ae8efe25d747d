"""The server's logging: uvicorn's own format, with every registered secret masked.

Access tokens (and API keys) are registered with :func:`chatledger.errors.register_secret`;
the filter here passes every record of uvicorn's handlers (the access log included) and of
chatledger's loggers through :func:`chatledger.errors.redact`, so a token that reaches a
log line by mistake (a client that puts it in a query string, an error that quotes it)
is written as ``***``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

from ..errors import redact

__all__ = ["RedactSecrets", "log_config"]


class RedactSecrets(logging.Filter):
    """Mask registered secrets in a record's message, arguments and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {
                key: redact(value) if isinstance(value, str) else value
                for key, value in record.args.items()
            }
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def log_config(level: str = "info") -> dict[str, Any]:
    """uvicorn's logging configuration with :class:`RedactSecrets` on every handler, and
    chatledger's loggers writing through the same handler."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": f"{__name__}.RedactSecrets"}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact"]
    config["loggers"]["chatledger"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        config["loggers"][name]["level"] = level.upper()
    return config
