"""RosLogBridge: the library's Python logging (sync buffer, backends, converters) into the node's
ROS logger, so /rosout and `ros2 launch` show why a backend was chosen or samples were dropped.

Warnings and errors are rate-limited per call site (file and line, and the record's string
arguments: a modality or reason name) with the node's RateLimiter, so a library warning inside a
per-message path cannot flood /rosout while distinct reasons from one call site still show.
While the bridge is installed it is the
package logger's only handler (a `fusion` command's stderr handler would print each line twice:
the ROS logger prints to the console too); removing it restores what was there.
"""
from __future__ import annotations

import logging
from typing import Any

from fusion_node.ratelimit import RateLimiter

PACKAGE_LOGGER = "fusion_node"


class RosLogBridge(logging.Handler):
    def __init__(self, ros_logger: Any, limiter: RateLimiter) -> None:
        super().__init__(logging.INFO)
        self.ros_logger = ros_logger
        self.limiter = limiter
        self._saved: list[logging.Handler] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"[{record.name}] {record.getMessage()}"
            if record.levelno >= logging.ERROR:
                log = self._error
            elif record.levelno >= logging.WARNING:
                log = self._warning
            else:
                log = self._info
            if record.levelno >= logging.WARNING:
                args = record.args if isinstance(record.args, tuple) else ()
                names = tuple(a for a in args if isinstance(a, str))
                self.limiter.emit(("log", record.pathname, record.lineno, names), text, log)
            else:
                log(text)  # one-off INFO lines (backend choice) are never repeated per message
        except Exception:  # noqa: BLE001 - a log line must never take its caller down
            pass

    # rclpy remembers the severity of each call site (file, function, line) and raises ValueError
    # when that site logs at another one: every severity gets a call site of its own.
    def _error(self, text: str) -> None:
        self.ros_logger.error(text)

    def _warning(self, text: str) -> None:
        self.ros_logger.warning(text)

    def _info(self, text: str) -> None:
        self.ros_logger.info(text)

    def install(self) -> RosLogBridge:
        logger = logging.getLogger(PACKAGE_LOGGER)
        self._saved = list(logger.handlers)
        for h in self._saved:
            logger.removeHandler(h)
        logger.addHandler(self)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
        return self

    def remove(self) -> None:
        logger = logging.getLogger(PACKAGE_LOGGER)
        logger.removeHandler(self)
        for h in self._saved:
            logger.addHandler(h)
        self._saved = []
