"""Serve the probe as a real process (``python -m tests.reliability.probe_server PORT``).

It prints ``slow_started`` when a Slow call begins, so a test can send SIGTERM at exactly
that moment, and exits when serve_forever returns.
"""

from __future__ import annotations

import asyncio
import sys

from tally.logging import configure_logging
from tally.server import serve_forever
from tests.reliability.probe import Probe, probe_app


class AnnouncingProbe(Probe):
    async def slow(self, request: bytes, context) -> bytes:
        print("slow_started", flush=True)
        answer = await super().slow(request, context)
        print("slow_finished", flush=True)
        return answer


def main() -> None:
    configure_logging("console", "warning")
    port = int(sys.argv[1])
    asyncio.run(serve_forever(probe_app(AnnouncingProbe()), "127.0.0.1", port, grace=10.0))
    print("exited_cleanly", flush=True)


if __name__ == "__main__":
    main()
