"""``python -m app``: serve on BGR_HOST:BGR_PORT (default 0.0.0.0:5000), in BGR_WORKERS processes."""

from __future__ import annotations

from app import logs
from app.settings import Settings
from app.workers import run_server, supervise, worker_count


def serve(settings: Settings) -> None:
    logs.configure()
    count = worker_count(settings)
    if count > 1:
        raise SystemExit(supervise(settings, count))
    run_server(settings)


def main() -> None:
    serve(Settings.from_env())


if __name__ == "__main__":
    main()
