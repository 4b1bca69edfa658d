"""`Background`: a worker thread for observers, so drawing and uploading never stall a search."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

from .secrets import redact_text

logger = logging.getLogger(__name__)


class Background:
    """Runs submitted jobs one at a time, in order, on a daemon thread.

    A job submitted with a `key` replaces a queued (not yet started) job with the same key, so
    a slow store sees only the newest figure, never a backlog. A job that raises is logged (its
    message with passwords redacted, since client errors quote URLs) and dropped: an observer
    must never stop the search it observes.

    Args:
        name: the thread's name (shown in logs and stack dumps).
        secrets: strings to redact from logged errors, besides passwords in URLs.

    Example:
        >>> worker = Background("demo")
        >>> done = []
        >>> worker.submit(lambda: done.append(1), key="figure")
        >>> worker.close(timeout=5), done
        (True, [1])
    """

    def __init__(self, name: str, secrets: Sequence[str] = ()) -> None:
        self.name = name
        self.secrets = [secret for secret in secrets if secret]
        self._jobs: OrderedDict[Hashable, Callable[[], None]] = OrderedDict()
        self._lock = threading.Condition()
        self._closed = False
        self._counter = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None], key: Hashable | None = None) -> None:
        """Queue `job`; with a `key`, drop a queued job with the same key first.

        Raises:
            RuntimeError: after `close`.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name} is closed")
            if key is None:
                self._counter += 1
                key = ("unkeyed", self._counter)
            self._jobs.pop(key, None)
            self._jobs[key] = job
            self._lock.notify_all()

    def close(self, timeout: float | None = None) -> bool:
        """Run what is queued, then stop; False when that took longer than `timeout` seconds."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._jobs and not self._closed:
                    self._lock.wait()
                if not self._jobs:
                    return
                _, job = self._jobs.popitem(last=False)
            try:
                job()
            except Exception as exc:
                self.failures += 1
                reason = redact_text(f"{type(exc).__name__}: {exc}", self.secrets)
                logger.error("%s: a background job failed (the search goes on): %s", self.name, reason)
