"""The service's one settings object, read from ``BGR_*`` environment variables.

Every field is documented in the README's settings table; keep the two in step.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_ORIGIN = re.compile(r"^https?://[^/\s?#]+$")  # scheme://host[:port], no path


TARGETS = ("auto", "subject", "scene")


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class CorsPolicy:
    """Which origins may call: ``any_origin``, or those in ``origins`` (none: CORS off)."""

    any_origin: bool
    origins: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, entries: tuple[str, ...]) -> "CorsPolicy":
        """``("*",)``, ``("none",)`` or origins such as ``("https://app.example.com", "http://localhost:3000")``."""
        lowered = tuple(entry.strip().lower().rstrip("/") for entry in entries)
        if lowered in ((), ("none",)):
            return cls(any_origin=False)
        if lowered == ("*",):
            return cls(any_origin=True)
        for entry in lowered:
            if not _ORIGIN.match(entry):
                raise ValueError(f"{entry!r} is not *, none or an origin (scheme://host[:port], no path)")
        return cls(any_origin=False, origins=frozenset(lowered))

    @property
    def enabled(self) -> bool:
        return self.any_origin or bool(self.origins)

    def allow_origin(self, origin: str | None) -> str | None:
        """The ``Access-Control-Allow-Origin`` value for a request from ``origin``; None: no CORS headers."""
        if origin is None:
            return None
        if self.any_origin:
            return "*"
        return origin if origin.lower() in self.origins else None



def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.replace("\n", ",").split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 5000
    workers: str = "auto"  # serving processes on the port, each with its own engines and batcher; auto: 1 on the CPU (app/workers.py)
    model: str = "isnet-general-use"  # the network a request without ?model= gets (README "Models")
    models: tuple[str, ...] = ()  # the networks loaded at start, each with its own batcher; empty: BGR_MODEL alone
    models_dir: Path = PROJECT_ROOT / "model_weights"  # where `weights fetch --model` puts networks (and model cards)
    accept_licences: tuple[str, ...] = ()  # networks whose non-commercial or unstated licence the operator accepts
    weights: Path = PROJECT_ROOT / "model_weights" / "isnet-general.safetensors"  # isnet-general-use's weights
    sky_weights: Path = PROJECT_ROOT / "model_weights" / "sky-u2netp.safetensors"  # absent: scene handling off
    person_weights: Path = PROJECT_ROOT / "model_weights" / "person-detector.tflite"  # absent: scene handling off (it never risks a subject)
    target: str = "auto"  # auto | subject | scene: the default when a request names no target
    decontaminate: bool = False  # estimate the foreground's colour in a cut-out's soft edges (not Azure's output)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (fp16 on CUDA, fp32 on CPU) | float32 | float16 | bfloat16
    runtime: str = "auto"  # auto (CPU: openvino bf16 where the CPU has native bf16, else onnxruntime fp32; CUDA: torch) | torch | onnxruntime | openvino
    infer_requests: str = "auto"  # calls of one network run at once (OpenVINO streams); auto: one per 8 cores with OpenVINO, else 1
    resolution: int = 1024  # the model's square input side, a multiple of 32
    device_pixels: str = "auto"  # auto (on with CUDA) | on | off: JPEG decoding, the resize into the model and the matte's upsampling on the model's device
    second_resolution: str = "auto"  # auto (3/4 of the side on a GPU, none on the CPU) | 0 (one pass) | a side: a second pass, logits averaged
    max_batch_size: int = 0  # most images per model call; 0: 8 on a GPU, 1 on the CPU (where a batch only costs memory)
    max_batch_wait_ms: float = 5.0
    queue_size: int = 64  # requests waiting for the model; beyond it, 429
    decode_concurrency: int = 2  # images decoded or composed at once (CPU work beside the model)
    max_pixels_in_flight: int = 200_000_000  # full-size image pixels held at once, decode to last byte sent
    body_timeout_s: float = 60.0  # the whole request body must arrive within this (a refused body's drain too)
    drain_max_bytes: int = 67_108_864  # unread body of a refused request read and discarded so the client reads the answer
    header_timeout_s: float = 10.0  # request headers must arrive within this (slowloris)
    shutdown_grace_s: float = 30.0  # on SIGTERM, time to finish in-flight and queued requests
    switch_interval_ms: float = 1.0  # Python's GIL switch interval: how long a thread back from C work may wait for it
    torch_threads: int = 0  # CPU intra-op threads for PyTorch and ONNX Runtime (0: their default, one per core)
    png_compression: int = 2  # deflate level 0-9 of cut-outs; 1-2 are ISA-L's: photos deflate slowly, and 2 is 23x faster than zlib's 6
    matte_png_compression: int = 6  # deflate level 0-9 of mattes: zlib's 6 is Azure's, byte for byte, and mattes deflate fast
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    api_keys_file: Path | None = None
    url_timeout_s: float = 10.0
    url_max_redirects: int = 5
    url_allow: tuple[str, ...] = ()  # hosts or networks the URL fetcher may reach despite SSRF rules
    retry_after_s: int = 1
    cors_origins: tuple[str, ...] = ("*",)  # origins browsers may call from: * (any, as Azure's cloud), a list, or none

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = environ.get(f"BGR_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            default = f.default
            try:
                if isinstance(default, bool):
                    values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
                elif isinstance(default, int):
                    values[f.name] = int(raw)
                elif isinstance(default, float):
                    values[f.name] = float(raw)
                elif isinstance(default, tuple):
                    values[f.name] = _split(raw)
                elif f.name in ("weights", "sky_weights", "person_weights", "api_keys_file", "models_dir"):
                    values[f.name] = Path(raw)
                else:
                    values[f.name] = raw.strip()
            except ValueError:
                raise SettingsError(f"BGR_{f.name.upper()}={raw!r} is not a valid {type(default).__name__}") from None
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.resolution <= 0 or self.resolution % 32:
            raise SettingsError("BGR_RESOLUTION must be a positive multiple of 32")
        if self.second_resolution != "auto":
            try:
                side = int(self.second_resolution)
            except ValueError:
                side = -1
            if side < 0 or side % 32 or side >= self.resolution:
                raise SettingsError("BGR_SECOND_RESOLUTION must be auto, 0 (one pass) or a multiple of 32 below BGR_RESOLUTION")
        if self.workers != "auto" and not (self.workers.isdigit() and int(self.workers) >= 1):
            raise SettingsError("BGR_WORKERS must be auto or a whole number of at least 1")
        if self.max_batch_size < 0:
            raise SettingsError("BGR_MAX_BATCH_SIZE must be 0 (automatic) or more")
        if min(self.queue_size, self.decode_concurrency, self.max_pixels_in_flight) < 1:
            raise SettingsError("BGR_QUEUE_SIZE, BGR_DECODE_CONCURRENCY and BGR_MAX_PIXELS_IN_FLIGHT must be at least 1")
        if min(self.body_timeout_s, self.header_timeout_s, self.url_timeout_s) <= 0:
            raise SettingsError("BGR_BODY_TIMEOUT_S, BGR_HEADER_TIMEOUT_S and BGR_URL_TIMEOUT_S must be positive")
        if not (0 < self.switch_interval_ms <= 1000):
            raise SettingsError("BGR_SWITCH_INTERVAL_MS must be above 0 and at most 1000")
        if not (0 <= self.png_compression <= 9 and 0 <= self.matte_png_compression <= 9):
            raise SettingsError("BGR_PNG_COMPRESSION and BGR_MATTE_PNG_COMPRESSION must be 0-9")
        if self.drain_max_bytes < 0:
            raise SettingsError("BGR_DRAIN_MAX_BYTES must be 0 or more")
        self.cors_policy()  # raises on a malformed list
        if self.target not in TARGETS:
            raise SettingsError("BGR_TARGET must be auto, subject or scene")
        if self.runtime not in ("auto", "torch", "onnxruntime", "openvino"):
            raise SettingsError("BGR_RUNTIME must be auto, torch, onnxruntime or openvino")
        if self.infer_requests != "auto" and not (self.infer_requests.isdigit() and int(self.infer_requests) >= 1):
            raise SettingsError("BGR_INFER_REQUESTS must be auto or a whole number of at least 1")
        if self.dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise SettingsError("BGR_DTYPE must be auto, float32, float16 or bfloat16")
        if self.device_pixels not in ("auto", "on", "off"):
            raise SettingsError("BGR_DEVICE_PIXELS must be auto, on or off")
        if self.models and self.model not in self.models:
            raise SettingsError(f"BGR_MODEL={self.model} must be one of BGR_MODELS ({', '.join(self.models)})")

    def loaded_models(self) -> tuple[str, ...]:
        """The networks to load, the default first."""
        return (self.model, *(name for name in dict.fromkeys(self.models) if name != self.model))

    def cors_policy(self) -> CorsPolicy:
        try:
            return CorsPolicy.parse(self.cors_origins)
        except ValueError as reason:
            raise SettingsError(f"BGR_CORS_ORIGINS: {reason}") from None

    def all_api_keys(self) -> frozenset[str]:
        """Keys from BGR_API_KEYS and from the secrets file (one per line); empty means open access."""
        keys = set(self.api_keys)
        if self.api_keys_file is not None:
            keys.update(_split(self.api_keys_file.read_text()))
        return frozenset(keys)
