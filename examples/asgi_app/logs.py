"""Structured JSON logs (structlog over the standard ``logging`` module), with secrets redacted.

Every line is one JSON object. Values under sensitive keys (passwords, tokens, API keys,
cookies, card data) are replaced, and any string that looks like a JWT, a bearer token
or a card number is masked wherever it appears, so that a careless log call still
cannot leak one.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

import structlog

__all__ = ["REDACTED", "get_logger", "log_request", "redact"]

REDACTED = "[REDACTED]"

_SENSITIVE_KEY = re.compile(
    r"pass(word)?|secret|token|authori[sz]ation|cookie|api[_-]?key|card|cvc|cvv|pan\b|signature",
    re.IGNORECASE,
)
_SENSITIVE_TEXT = (
    re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*"),  # a JWT
    re.compile(r"(?i)bearer\s+[\w.~+/=-]+"),
    re.compile(r"\b(?:\d[ -]?){12,18}\d\b"),  # a card number (13-19 digits)
    re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_\w+"),  # Stripe keys
    re.compile(r"\bSG\.[\w-]+\.[\w-]+"),  # SendGrid keys
)


# Any of the patterns above, in one pass: most strings match none and are returned as they
# are; a string that matches goes through the patterns one by one, as before.
_ANY_SENSITIVE_TEXT = re.compile(
    "|".join(p.pattern.replace("(?i)bearer", "(?i:bearer)") for p in _SENSITIVE_TEXT)
)


def _scrub(text: str) -> str:
    if _ANY_SENSITIVE_TEXT.search(text) is None:
        return text
    for pattern in _SENSITIVE_TEXT:
        text = pattern.sub(REDACTED, text)
    return text


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return _scrub(value)
    if isinstance(value, Mapping):
        return {
            k: REDACTED if _SENSITIVE_KEY.search(str(k)) else _clean(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace sensitive values in a log event (a structlog processor)."""
    for key, value in list(event_dict.items()):
        event_dict[key] = REDACTED if _SENSITIVE_KEY.search(key) else _clean(value)
    return event_dict


_LOGGER_NAME = "lumenquest.api"
_API_LOGGER = logging.getLogger(_LOGGER_NAME)


def _configure_stdlib(level: str) -> logging.Logger:
    logger = logging.getLogger(_LOGGER_NAME)
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    return logger


def get_logger(level: str = "info") -> Any:
    """Return the app's JSON logger (a structlog BoundLogger over ``lumenquest.api``)."""
    return structlog.wrap_logger(
        _configure_stdlib(level),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,  # last before rendering: it sees the traceback text too
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
    )


def log_request(**fields: Any) -> None:
    """Write the one line per request: the line :func:`get_logger`'s chain renders.

    The same processors in the same order (level, UTC timestamp, :func:`redact`, JSON),
    written straight to ``lumenquest.api``: the request line is the one every request
    pays for, and structlog's generic dispatch costs more than the line itself.
    """
    logger = _API_LOGGER
    if not logger.isEnabledFor(logging.INFO):
        return
    # The caller's fields are redacted as any event is; the three added here are ours.
    event = {k: REDACTED if _sensitive_key(k) else _clean(v) for k, v in fields.items()}
    event["event"] = "request"
    event["level"] = "info"
    event["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    logger.info(json.dumps(event))


_KEY_VERDICTS: dict[str, bool] = {}


def _sensitive_key(key: str) -> bool:
    """``_SENSITIVE_KEY`` for the request line's field names (a handful, from our code)."""
    verdict = _KEY_VERDICTS.get(key)
    if verdict is None:
        verdict = _SENSITIVE_KEY.search(key) is not None
        if len(_KEY_VERDICTS) < 64:
            _KEY_VERDICTS[key] = verdict
    return verdict
