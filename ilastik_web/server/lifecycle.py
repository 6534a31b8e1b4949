"""Process lifecycle of ``ilastik-web serve``: stop cleanly on SIGTERM or SIGINT.

systemd stops a service with SIGTERM; Python's default for it is to die on the spot,
skipping the app's cleanup (closing projects, which flushes and closes their label logs,
stopping SAM and job threads). :func:`wait_for_stop` turns both signals into a normal
return, so the caller's ``finally`` runs the cleanup.
"""

from __future__ import annotations

import asyncio
import logging
import signal

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def wait_for_stop() -> int:
    """Return the number of the first stop signal received (SIGTERM or SIGINT)."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[int] = loop.create_future()

    def stop(signum: int) -> None:
        if not received.done():
            received.set_result(signum)

    installed = []
    for signum in STOP_SIGNALS:
        try:
            loop.add_signal_handler(signum, stop, signum)
            installed.append(signum)
        except (NotImplementedError, RuntimeError):  # not the main thread / not Unix
            pass
    try:
        signum = await received
    finally:
        for signum_installed in installed:
            loop.remove_signal_handler(signum_installed)
    log.info("%s: shutting down", signal.Signals(signum).name)
    return signum
