"""Logging: JSON lines to stdout, and to daily-rotated files when LOG_DIR is set.

Every record passes a redaction filter that replaces known secret values, so a key that slips
into a message, an argument or an exception text never reaches a handler.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from gentask.config import Settings

REDACTED = "***"
# Extras that are plain data; anything else (Kopf passes its whole OperatorSettings on every
# record) is left out rather than dumped as a repr.
_PLAIN = (str, int, float, bool, type(None), list, tuple, dict)
_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, the record's extra fields, error."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line; extras that are not plain data are left out."""
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_") and isinstance(value, _PLAIN):
                doc[key] = value
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class RedactingFilter(logging.Filter):
    """Replaces every known secret in the rendered message, extras and exception text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def _scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Scrub every known secret from the record in place (message rendered, args dropped); keeps every record."""
        if not self.secrets:
            return True
        record.msg = self._scrub(record.getMessage())
        record.args = None
        for key, value in list(record.__dict__.items()):
            if key not in _STD_ATTRS and isinstance(value, str):
                setattr(record, key, self._scrub(value))
        if record.exc_info:
            record.exc_text = self._scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class _ExcTextFormatter(JsonFormatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if record.exc_text and not record.exc_info:
            doc = json.loads(line)
            doc["error"] = record.exc_text
            line = json.dumps(doc, default=str, ensure_ascii=False)
        return line


def setup_logging(settings: Settings, stream: IO[str] | None = None) -> logging.Logger:
    """Configure the root logger once for a process; returns it."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_gentask", False):
            root.removeHandler(handler)
            handler.close()
    formatter = _ExcTextFormatter()
    redact = RedactingFilter(settings.secrets())
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stdout)]
    if settings.log_dir is not None:
        from logging.handlers import TimedRotatingFileHandler  # here: a worker pod logs to stdout only

        settings.log_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(TimedRotatingFileHandler(
            settings.log_dir / "gentask.log", when="midnight", backupCount=settings.log_keep_days,
            encoding="utf-8", utc=True))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(redact)
        handler._gentask = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    return root
