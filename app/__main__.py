"""``python -m app``: serve on BGR_HOST:BGR_PORT (default 0.0.0.0:5000)."""

from __future__ import annotations

import uvicorn

from app import logs
from app.http.server_protocol import with_header_timeout
from app.main import create_app
from app.settings import Settings


def main() -> None:
    logs.configure()
    settings = Settings.from_env()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        http=with_header_timeout(settings.header_timeout_s),
        log_config=None,  # keep the JSON handler configured above
        access_log=False,  # app.access logs each request instead, without the query string
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
