"""Log output of the long-running roles: readable text (the default) or one JSON object per line.

JSON lines are for log collectors (Loki, Elasticsearch, CloudWatch...): every record carries
``time`` (ISO 8601, UTC), ``level``, ``logger`` and ``message``, plus ``exception`` with the
traceback when there is one. A stdlib ``logging.Formatter`` of a dozen lines does it; no extra
dependency is worth that.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def formatter(fmt: LogFormat) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(level: str, fmt: LogFormat = "text") -> None:
    """Root logging to stderr at ``level`` in ``fmt`` (the worker's set-up)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def uvicorn_log_config(level: str, fmt: LogFormat = "text") -> dict[str, Any]:
    """uvicorn's ``log_config``: its loggers and ours (``digitstream.*``) at ``level``, in ``fmt``."""
    format_class = {"()": f"{__name__}.JsonFormatter"} if fmt == "json" else {"format": TEXT_FORMAT}
    handler = {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
    logger = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": format_class},
        "handlers": {"default": handler},
        "loggers": {name: dict(logger) for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "digitstream")},
    }


__all__ = ["LOG_FORMATS", "JsonFormatter", "LogFormat", "configure_logging", "uvicorn_log_config"]
