"""Serving processes: one uvicorn server, or several on one port under a supervisor (BGR_WORKERS).

With several, the supervisor binds the port and starts that many worker processes, each with its
own engines, batcher and budgets, serving the same socket: the kernel gives each new connection
to one worker that is accepting. The socket is bound but not listening until the first worker has
warmed its model and starts serving, so, as with one process, nothing connects before a worker
can answer, and every answer (``/health/ready`` too) comes from a ready process.

SIGTERM or SIGINT to the supervisor is passed to every worker as SIGTERM: each stops accepting,
answers what it has in flight and queued (BGR_SHUTDOWN_GRACE_S), and exits; the supervisor then
exits 0. A worker that exits while nothing asked it to is not restarted: the supervisor drains
the others the same way and exits 1, so the container's restart policy (or the pod's) starts the
whole set afresh and the failure shows there, rather than a pod serving quietly on fewer workers.

Metrics: a fresh folder for prometheus-client's multiprocess mode, made before the workers start
and removed when the supervisor exits (app/metrics.py).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import wait
from pathlib import Path

import uvicorn

from app import logs
from app.cpu import available_cores
from app.http.server_protocol import with_header_timeout
from app.settings import Settings

log = logging.getLogger("app.workers")
GPU_WORKERS_MAX = 4  # see worker_count
EXIT_GRACE_S = 15.0  # beyond a worker's own drain deadline, before the supervisor kills it


def run_server(settings: Settings, sockets: list[socket.socket] | None = None, metrics_dir: Path | None = None) -> None:
    """One serving process: the app under uvicorn, on BGR_HOST:BGR_PORT or on ``sockets`` handed down by a supervisor."""
    from app.main import create_app  # here, so that a supervisor never loads the model's libraries

    # Decoding, deflate and the model run in C without the GIL, in many threads at once; each must
    # take the GIL back between calls, and under load that waits up to one switch interval (5 ms by
    # default) per call. A shorter interval keeps those threads moving.
    sys.setswitchinterval(settings.switch_interval_ms / 1000)
    config = uvicorn.Config(
        create_app(settings, metrics_dir=metrics_dir),
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
    server = uvicorn.Server(config)
    if sockets is None:
        server.run()
    else:
        server.run(sockets=sockets)


# ---------------------------------------------------------------- how many


def uses_gpu(settings: Settings) -> bool:
    """Whether the serving processes will run on CUDA, decided as the engine decides (``BGR_DEVICE``)."""
    if settings.device != "auto":
        return settings.device.startswith("cuda")
    # Asked in a child process, so that the supervisor never holds torch and CUDA (hundreds of MB).
    probe = "import torch; print(int(torch.cuda.is_available()))"
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    return found.stdout.strip() == "1"


def worker_count(settings: Settings, cores: int | None = None, gpu: bool | None = None) -> int:
    """BGR_WORKERS as a number. ``auto``: 1 on the CPU, where the networks' forward already uses every
    core and each process would hold its own copy of the model; on a GPU, one per two cores, at most
    GPU_WORKERS_MAX (README, "Several serving processes": a process's request work keeps about 1.6
    cores busy, and each process holds its own CUDA context and batch on the one device)."""
    if settings.workers != "auto":
        return int(settings.workers)
    if not (uses_gpu(settings) if gpu is None else gpu):
        return 1
    cores = available_cores() if cores is None else cores
    return max(1, min(cores // 2, GPU_WORKERS_MAX))


# ---------------------------------------------------------------- several


def bind_socket(host: str, port: int) -> socket.socket:
    """The port, bound and not yet listening: the first worker to be ready makes it listen."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def supervise(settings: Settings, count: int) -> int:
    """Run ``count`` serving processes on one port until told to stop or one fails; the exit status."""
    sock = bind_socket(settings.host, settings.port)
    metrics_dir = Path(tempfile.mkdtemp(prefix="bgremoval-metrics-"))
    # Read by prometheus-client when a worker imports it (app/metrics.py); spawned workers inherit it.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    if settings.torch_threads == 0:
        # Each process's CPU intra-op pool would otherwise take every core.
        settings = settings.replace(torch_threads=max(1, available_cores() // count))
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        if not stop.is_set():
            log.info("stopping workers", extra={"signal": signal.Signals(signum).name})
            stop.set()
            signal_all(signal.SIGTERM)

    context = multiprocessing.get_context("spawn")  # never fork a process that may hold threads or CUDA
    workers: dict[int, multiprocessing.process.BaseProcess] = {}

    def signal_all(signum: int) -> None:
        for process in workers.values():
            if process.exitcode is None and process.pid is not None:
                os.kill(process.pid, signum)

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        for index in range(count):
            if stop.is_set():
                break
            process = context.Process(
                target=_worker, args=(settings, sock, index, metrics_dir, os.getpid()), name=f"bgremoval-worker-{index}"
            )
            process.start()  # the socket's descriptor is handed to the child as it starts
            workers[index] = process
        # The workers hold the socket now. Closed here, the port stops accepting once the last worker closes its copy.
        sock.close()
        log.info("workers started", extra={"workers": count, "pids": [p.pid for p in workers.values()], "metrics_dir": str(metrics_dir)})
        running = dict(workers)
        deadline: float | None = None
        while running:
            if stop.is_set() and deadline is None:
                deadline = time.monotonic() + 2 * settings.shutdown_grace_s + EXIT_GRACE_S
            timeout = 1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            ready = wait([p.sentinel for p in running.values()], timeout)
            if not ready and deadline is not None and time.monotonic() >= deadline:
                log.error("workers still running past the shutdown deadline: killed", extra={"pids": [p.pid for p in running.values()]})
                signal_all(signal.SIGKILL)
                status = 1
                deadline = None
                continue
            for index, process in list(running.items()):
                if process.sentinel not in ready:
                    continue
                process.join()
                del running[index]
                _forget_gauges(metrics_dir, process.pid)
                if not stop.is_set():
                    log.error("worker exited unexpectedly: stopping the others", extra={"worker": index, "exit_code": process.exitcode})
                    stop.set()
                    signal_all(signal.SIGTERM)
                    status = 1
                elif process.exitcode != 0:
                    log.error("worker exited with an error while stopping", extra={"worker": index, "exit_code": process.exitcode})
                    status = 1
        log.info("workers stopped", extra={"exit_code": status})
        return status
    finally:
        signal_all(signal.SIGKILL)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _forget_gauges(metrics_dir: Path, pid: int | None) -> None:
    """A dead worker's gauges no longer count in the ``livesum`` ones (its counters keep counting)."""
    from prometheus_client import multiprocess

    if pid is not None:
        multiprocess.mark_process_dead(pid, str(metrics_dir))


def _worker(settings: Settings, sock: socket.socket, index: int, metrics_dir: Path, supervisor_pid: int) -> None:
    """A worker process's entry point (spawned: a fresh interpreter)."""
    logs.configure(fields={"worker": index})
    # uvicorn raises SIGINT again after draining, like SIGTERM: that too is a clean end here.
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    threading.Thread(target=_drain_when_orphaned, args=(supervisor_pid,), daemon=True, name="supervisor-watch").start()
    run_server(settings, sockets=[sock], metrics_dir=metrics_dir)


def _drain_when_orphaned(supervisor_pid: int) -> None:
    # A supervisor killed outright (SIGKILL) cannot pass SIGTERM on: drain and go rather than serve unsupervised.
    while os.getppid() == supervisor_pid:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)
