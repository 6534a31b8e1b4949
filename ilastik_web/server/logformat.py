"""Structured logs: one JSON object per line (``ilastik-web serve --log-format json``),
for journald/Loki/Elasticsearch pipelines that parse fields rather than text."""

from __future__ import annotations

import json
import logging
import time

#: LogRecord attributes that are not user-supplied ``extra`` fields.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", ...extra fields, "exception"?}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                    + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) \
                    else repr(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def use_json_logs() -> None:
    """Switch every root handler to :class:`JsonFormatter`."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(JsonFormatter())
