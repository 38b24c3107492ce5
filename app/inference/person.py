"""Is there a person in the picture? MediaPipe's BlazePose person detector, asked by the scene rule.

A wide outdoor photo of a person (in front of mountains, on a running track) has the layout of a
landscape: much sky, and an object that is a small part of the ground. Layout cannot tell the two
apart, but a person detector can, and a person is the subject Azure would cut out. The detector is
MediaPipe's pose detector (Apache-2.0, from the ``mediapipe`` wheel; ``python -m app.weights fetch``
extracts it): 224 x 224 letterboxed RGB in [-1, 1], 2254 anchors out, each with a logit. Only the
best anchor's probability is used, at MediaPipe's own threshold of 0.5 (``SceneRule``): the
question is whether a person is there, not where.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

INPUT_SIDE = 224
log = logging.getLogger(__name__)


@contextmanager
def native_stderr_logged() -> Iterator[None]:
    """What native code prints to the process's stderr meanwhile, logged as one record instead.

    TFLite announces its XNNPACK delegate ("INFO: Created TensorFlow Lite XNNPACK delegate for
    CPU.") straight to file descriptor 2, which would break the service's JSON log lines. Anything
    else written to stderr in that moment is kept in the same record, not lost.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace").strip()
            if text:
                log.info("person detector runtime output", extra={"native_output": text})


def letterboxed(rgb: np.ndarray, side: int = INPUT_SIDE) -> np.ndarray:
    """H x W x 3 uint8 -> 1 x side x side x 3 float32 in [-1, 1], aspect kept, padded with black (as MediaPipe pads)."""
    height, width = rgb.shape[:2]
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    canvas = np.zeros((side, side, 3), np.uint8)
    top, left = (side - size[1]) // 2, (side - size[0]) // 2
    canvas[top : top + size[1], left : left + size[0]] = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
    return (canvas.astype(np.float32) / np.float32(127.5) - np.float32(1.0))[None]


class PersonDetector:
    """The probability that a person is in an RGB image. Thread-safe: one TFLite interpreter behind a lock (3 ms a call)."""

    def __init__(self, model_path: Path, threads: int = 1) -> None:
        from ai_edge_litert.interpreter import Interpreter  # imported here: only a service with scene handling needs it

        with native_stderr_logged():
            self._interpreter = Interpreter(model_path=str(model_path), num_threads=threads)
            self._interpreter.allocate_tensors()
        (image_input,) = self._interpreter.get_input_details()
        if tuple(image_input["shape"]) != (1, INPUT_SIDE, INPUT_SIDE, 3):
            raise ValueError(f"{model_path} takes {tuple(image_input['shape'])}, not MediaPipe's pose detector input (1, 224, 224, 3)")
        self._input = image_input["index"]
        # Outputs: box regressors (1 x 2254 x 12) and one logit per anchor (1 x 2254 x 1).
        self._logits = next(d["index"] for d in self._interpreter.get_output_details() if d["shape"][-1] == 1)
        self._lock = threading.Lock()

    def score(self, rgb: np.ndarray) -> float:
        x = letterboxed(rgb)
        with self._lock:
            self._interpreter.set_tensor(self._input, x)
            self._interpreter.invoke()
            best = float(self._interpreter.get_tensor(self._logits).max())
        return float(1.0 / (1.0 + np.exp(-np.clip(best, -100.0, 100.0))))
