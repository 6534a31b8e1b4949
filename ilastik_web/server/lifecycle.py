"""Process lifecycle of ``ilastik-web serve``: stop cleanly on SIGTERM or SIGINT.

systemd stops a service with SIGTERM; Python's default for it is to die on the spot,
skipping the app's cleanup (closing projects, which flushes and closes their label logs,
stopping SAM and job threads). :class:`StopSignals` turns both signals into a normal
return, so the caller's ``finally`` runs the cleanup.
"""

from __future__ import annotations

import asyncio
import logging
import signal

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """SIGTERM/SIGINT handlers installed now (before the server announces itself, so an
    early stop is not lost); ``await stop.wait()`` returns the signal's number."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._received: asyncio.Future[int] = self._loop.create_future()
        self._installed = []
        for signum in STOP_SIGNALS:
            try:
                self._loop.add_signal_handler(signum, self._stop, signum)
                self._installed.append(signum)
            except (NotImplementedError, RuntimeError):  # not the main thread / not Unix
                pass

    def _stop(self, signum: int) -> None:
        if not self._received.done():
            self._received.set_result(signum)

    async def wait(self) -> int:
        try:
            signum = await self._received
        finally:
            self.close()
        log.info("%s: shutting down", signal.Signals(signum).name)
        return signum

    def close(self) -> None:
        for signum in self._installed:
            self._loop.remove_signal_handler(signum)
        self._installed = []
