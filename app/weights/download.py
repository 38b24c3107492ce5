"""Downloading a catalogued network: streamed, resumable, checked before anything is put where the service loads.

The bytes go to ``<cache>/downloads/<file>.partial``; a broken transfer resumes from what is there
(HTTP Range) or, when the server ignores the range, starts over. Only a complete file whose size and
hashes match the catalogue leaves the cache, and it is moved into place atomically, so the weights
folder never holds a partial or unchecked file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import IO

import httpx

from app.catalogue import Source
from app.weights.source import WeightsError

CHUNK = 1 << 20


def check_file(path: Path, source: Source) -> None:
    """Raise unless ``path`` has the catalogued size and hashes (at least one hash is required)."""
    if source.md5 is None and source.sha256 is None:
        raise WeightsError(f"the catalogue gives no hash for {source.url}: nothing to check it against")
    size = path.stat().st_size
    if source.size is not None and size != source.size:
        raise WeightsError(f"{path.name} is {size:,} bytes; the catalogue says {source.size:,}")
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            md5.update(block)
            sha256.update(block)
    for name, expected, digest in (("MD5", source.md5, md5), ("SHA-256", source.sha256, sha256)):
        if expected is not None and digest.hexdigest() != expected:
            raise WeightsError(f"{path.name} has {name} {digest.hexdigest()}; the catalogue says {expected}")


def install(checked: Path, destination: Path) -> Path:
    """Copy a checked file to ``destination`` atomically (through a temporary name in the same folder)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(checked, temporary)
        temporary.chmod(0o644)
        temporary.replace(destination)
    finally:
        temporary.unlink(missing_ok=True)
    return destination


class ProgressBar:
    """``[#####.....] 12.3/45.6 MB  3.2 MB/s`` on stderr, redrawn at most ten times a second."""

    def __init__(self, total: int | None, stream: IO[str] = sys.stderr) -> None:
        self.total = total
        self.stream = stream
        self.started = time.monotonic()
        self.drawn = 0.0

    def update(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.drawn < 0.1:
            return
        self.drawn = now
        rate = done / max(now - self.started, 1e-6) / 1e6
        if self.total:
            filled = int(24 * min(done / self.total, 1.0))
            line = f"\r[{'#' * filled}{'.' * (24 - filled)}] {done / 1e6:.1f}/{self.total / 1e6:.1f} MB  {rate:.1f} MB/s"
        else:
            line = f"\r{done / 1e6:.1f} MB  {rate:.1f} MB/s"
        print(line, end="\n" if final else "", file=self.stream, flush=True)


def _transfer(client: httpx.Client, url: str, partial: Path, total: int | None, bar: ProgressBar | None) -> None:
    """One attempt: resume ``partial`` from its length, or start over when the server sends the whole file."""
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with client.stream("GET", url, headers=headers) as response:
        if response.status_code == 416:  # nothing beyond what we have, or a stale partial: start over
            partial.unlink(missing_ok=True)
            raise httpx.TransportError("range not satisfiable; restarting")
        response.raise_for_status()
        resumed = response.status_code == 206
        mode = "ab" if resumed else "wb"
        done = have if resumed else 0
        with partial.open(mode) as out:
            for block in response.iter_bytes(CHUNK):
                out.write(block)
                done += len(block)
                if bar is not None:
                    bar.update(done)
    if bar is not None:
        bar.update(done, final=True)
    if total is not None and done < total:
        raise httpx.TransportError(f"the connection closed after {done:,} of {total:,} bytes")


def download(source: Source, cache_dir: Path, file_name: str, attempts: int = 4, timeout_s: float = 60.0,
             progress: bool = True, client: httpx.Client | None = None) -> Path:
    """The checked file in ``cache_dir/downloads``, fetched (or resumed) from ``source.url`` with redirects followed."""
    folder = cache_dir / "downloads"
    folder.mkdir(parents=True, exist_ok=True)
    complete = folder / file_name
    if complete.is_file():
        try:
            check_file(complete, source)
            return complete
        except WeightsError:
            complete.unlink()
    partial = folder / f"{file_name}.partial"
    own_client = client is None
    client = client or httpx.Client(follow_redirects=True, timeout=timeout_s, trust_env=True)
    bar = ProgressBar(source.size) if progress else None
    try:
        for attempt in range(1, attempts + 1):
            try:
                _transfer(client, source.url, partial, source.size, bar)
                break
            except httpx.HTTPStatusError as error:
                raise WeightsError(f"{source.url} answered {error.response.status_code}") from None
            except httpx.TransportError as error:
                if attempt == attempts:
                    raise WeightsError(f"downloading {source.url} failed {attempts} times (last: {error}); run fetch again to resume") from None
                print(f"\ndownload interrupted ({error}); resuming (attempt {attempt + 1} of {attempts})", file=sys.stderr)
    finally:
        if own_client:
            client.close()
    try:
        check_file(partial, source)
    except WeightsError:
        partial.unlink(missing_ok=True)  # a wrong file is not resumed from
        raise
    partial.replace(complete)
    return complete
