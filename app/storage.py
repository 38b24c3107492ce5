"""Where weights and their caches live, and how files are hashed: read by set-up and serving alike.

Kept out of :mod:`app.weights` (the set-up tools) so that the serving path imports nothing from there.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$BGR_WEIGHTS_CACHE``, else ``$XDG_CACHE_HOME/bgremoval`` (``~/.cache/bgremoval``)."""
    base = os.environ.get("BGR_WEIGHTS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bgremoval"
    )
    return Path(base)


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    return file_digest(path, "sha256")
