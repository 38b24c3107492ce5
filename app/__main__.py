"""``python -m app``: serve on BGR_HOST:BGR_PORT (default 0.0.0.0:5000)."""

from __future__ import annotations

import signal
import sys

import uvicorn

from app import logs
from app.http.server_protocol import with_header_timeout
from app.main import create_app
from app.settings import Settings


def serve(settings: Settings) -> None:
    logs.configure()
    # Decoding, deflate and the model run in C without the GIL, in many threads at once; each must
    # take the GIL back between calls, and under load that waits up to one switch interval (5 ms by
    # default) per call. A shorter interval keeps those threads moving.
    sys.setswitchinterval(settings.switch_interval_ms / 1000)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        http=with_header_timeout(settings.header_timeout_s),
        log_config=None,  # keep the JSON handler configured above
        access_log=False,  # app.access logs each request instead, without the query string
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )
    # Uvicorn drains on SIGTERM, then raises the signal again against the handler it found.
    # Having drained, this process has shut down cleanly: that second SIGTERM must end in exit 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.Server(config).run()


def main() -> None:
    serve(Settings.from_env())


if __name__ == "__main__":
    main()
