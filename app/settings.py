"""The service's one settings object, read from ``BGR_*`` environment variables (and a ``.env`` file) by
pydantic-settings.

Every field is documented in the README's settings table; keep the two in step (tests/test_docs.py checks).
"""

from __future__ import annotations

import os
import re
from collections import ChainMap
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, DotEnvSettingsSource, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_ORIGIN = re.compile(r"^https?://[^/\s?#]+$")  # scheme://host[:port], no path


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


# A list setting: comma- (or newline-) separated text in the environment, not JSON.
Names = Annotated[tuple[str, ...], NoDecode]


class _Environ(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of the process's environment."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class Settings(BaseSettings):
    """Every setting, typed; ``Settings(...)`` takes values from its arguments alone, :meth:`from_env` from BGR_*
    variables. A bad value, or several, is one :class:`SettingsError` that names each variable."""

    model_config = SettingsConfigDict(env_prefix="BGR_", env_ignore_empty=True, env_file=".env", frozen=True)

    host: str = "0.0.0.0"
    port: int = Field(5000, ge=0, le=65535)
    workers: str = "auto"  # serving processes on the port, each with its own engines and batcher; auto: 1 on the CPU (app/workers.py)
    model: str = "isnet-general-use"  # the network a request without ?model= gets (README "Models")
    models: Names = ()  # the networks loaded at start, each with its own batcher; empty: BGR_MODEL alone
    models_dir: Path = PROJECT_ROOT / "model_weights"  # where `weights fetch --model` puts networks (and model cards)
    accept_licences: Names = ()  # networks whose non-commercial or unstated licence the operator accepts
    weights: Path = PROJECT_ROOT / "model_weights" / "isnet-general.safetensors"  # isnet-general-use's weights
    sky_weights: Path = PROJECT_ROOT / "model_weights" / "sky-u2netp.safetensors"  # absent: scene handling off
    person_weights: Path = PROJECT_ROOT / "model_weights" / "person-detector.tflite"  # absent: scene handling off (it never risks a subject)
    target: Literal["auto", "subject", "scene"] = "auto"  # the default when a request names no target
    decontaminate: bool = False  # estimate the foreground's colour in a cut-out's soft edges (not Azure's output)
    refine: Literal["auto", "on", "off"] = "auto"  # a subject's matte re-solved along its edge at the photo's size (app/inference/matting.py)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # auto: fp16 on CUDA; on the CPU bf16 where native (OpenVINO), else fp32
    runtime: Literal["auto", "torch", "onnxruntime", "openvino"] = "auto"  # auto (CPU: openvino bf16 where the CPU has native bf16, else onnxruntime fp32; CUDA: torch)
    infer_requests: str = "auto"  # calls of one network run at once (OpenVINO streams); auto: one per 8 cores with OpenVINO, else 1
    resolution: int = 1024  # the model's square input side, a multiple of 32
    device_pixels: Literal["auto", "on", "off"] = "auto"  # auto: on with CUDA; JPEG decoding, the resize into the model and the matte's upsampling on the model's device
    second_resolution: str = "auto"  # auto (3/4 of the side on a GPU, none on the CPU) | 0 (one pass) | a side: a second pass, logits averaged
    max_batch_size: int = Field(0, ge=0)  # most images per model call; 0: 8 on a GPU, 1 on the CPU (where a batch only costs memory)
    max_batch_wait_ms: float = Field(5.0, ge=0)
    queue_size: int = Field(64, ge=1)  # requests waiting for the model; beyond it, 429
    decode_concurrency: int = Field(2, ge=1)  # images decoded or composed at once (CPU work beside the model)
    max_pixels_in_flight: int = Field(200_000_000, ge=1)  # full-size image pixels held at once, decode to last byte sent
    body_timeout_s: float = Field(60.0, gt=0)  # the whole request body must arrive within this (a refused body's drain too)
    drain_max_bytes: int = Field(67_108_864, ge=0)  # unread body of a refused request read and discarded so the client reads the answer
    header_timeout_s: float = Field(10.0, gt=0)  # request headers must arrive within this (slowloris)
    shutdown_grace_s: float = Field(30.0, ge=0)  # on SIGTERM, time to finish in-flight and queued requests
    switch_interval_ms: float = Field(1.0, gt=0, le=1000)  # Python's GIL switch interval: how long a thread back from C work may wait for it
    torch_threads: int = Field(0, ge=0)  # CPU intra-op threads for PyTorch, ONNX Runtime and OpenVINO (0: their default, one per core)
    png_compression: int = Field(2, ge=0, le=9)  # deflate level of cut-outs; 1-2 are ISA-L's: photos deflate slowly, and 2 is 23x faster than zlib's 6
    matte_png_compression: int = Field(6, ge=0, le=9)  # deflate level of mattes: zlib's 6 is Azure's, byte for byte, and mattes deflate fast
    api_keys: Names = Field((), repr=False)
    api_keys_file: Path | None = None
    url_timeout_s: float = Field(10.0, gt=0)
    url_max_redirects: int = Field(5, ge=0)
    url_allow: Names = ()  # hosts or networks the URL fetcher may reach despite SSRF rules
    retry_after_s: int = Field(1, ge=0)
    cors_origins: Names = ("*",)  # origins browsers may call from: * (any, as Azure's cloud), a list, or none

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise SettingsError(_described(error)) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment is read by from_env only, so that Settings(...) in code and tests means what it says.
        return (init_settings,)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, overrides: Mapping[str, str] | None = None) -> "Settings":
        """The settings from BGR_* variables: ``environ``'s alone when given, else the process's environment over a
        ``.env`` file in the working directory (if any); ``overrides`` (BGR_* names too, the command line's options)
        win over both. An empty value means the default."""
        layers: list[Mapping[str, Any]] = []  # the first wins
        if overrides:
            layers.append(_Environ(cls, overrides)())
        if environ is None:
            # The file may hold other BGR_* variables (the weights tool's): only the settings' are taken.
            layers += [_Environ(cls, os.environ)(), {k: v for k, v in DotEnvSettingsSource(cls)().items() if k in cls.model_fields}]
        else:
            layers.append(_Environ(cls, environ)())
        return cls(**ChainMap(*layers))

    @field_validator("models", "accept_licences", "api_keys", "url_allow", "cors_origins", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        return _split(value) if isinstance(value, str) else value

    @field_validator("*", mode="before")
    @classmethod
    def _stripped(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: str) -> str:
        if value != "auto" and not (value.isdigit() and int(value) >= 1):
            raise ValueError("must be auto or a whole number of at least 1")
        return value

    @field_validator("infer_requests")
    @classmethod
    def _infer_requests(cls, value: str) -> str:
        if value != "auto" and not (value.isdigit() and int(value) >= 1):
            raise ValueError("must be auto or a whole number of at least 1")
        return value

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: int) -> int:
        if value <= 0 or value % 32:
            raise ValueError("must be a positive multiple of 32")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        CorsPolicy.parse(value)  # raises on a malformed list
        return value

    @field_validator("second_resolution")
    @classmethod
    def _second_resolution(cls, value: str, info: ValidationInfo) -> str:
        side = int(value) if value.isdigit() else -1
        if value != "auto" and (side < 0 or side % 32 or side >= info.data.get("resolution", side + 1)):
            raise ValueError("must be auto, 0 (one pass) or a multiple of 32 below BGR_RESOLUTION")
        return value

    @field_validator("models")
    @classmethod
    def _includes_the_default(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if value and "model" in info.data and info.data["model"] not in value:
            raise ValueError(f"BGR_MODEL={info.data['model']} must be one of them")
        return value

    def replace(self, **changes: Any) -> "Settings":
        """A copy with ``changes``, checked as the settings are (:class:`SettingsError`)."""
        return type(self)(**{**dict(self), **changes})

    def validate(self) -> None:  # type: ignore[override]  # pydantic's deprecated classmethod of the same name
        """Checks the values again (construction already has): :class:`SettingsError` when one is bad."""
        self.replace()

    def loaded_models(self) -> tuple[str, ...]:
        """The networks to load, the default first."""
        return (self.model, *(name for name in dict.fromkeys(self.models) if name != self.model))

    def cors_policy(self) -> CorsPolicy:
        return CorsPolicy.parse(self.cors_origins)  # checked when the settings were made

    def all_api_keys(self) -> frozenset[str]:
        """Keys from BGR_API_KEYS and from the secrets file (one per line); empty means open access."""
        keys = set(self.api_keys)
        if self.api_keys_file is not None:
            keys.update(_split(self.api_keys_file.read_text()))
        return frozenset(keys)


def _described(error: ValidationError) -> str:
    """Every problem of a validation, each naming its variable (and its value, unless it is a secret)."""
    problems = []
    for problem in error.errors(include_url=False):
        message = problem["msg"].removeprefix("Value error, ")
        if not problem["loc"]:  # a check across several settings: its message names them
            problems.append(message)
            continue
        name = str(problem["loc"][0])
        field = Settings.model_fields.get(name)
        shown = "" if field is None or not field.repr else f"={problem['input']!r}"
        problems.append(f"BGR_{name.upper()}{shown}: {message}")
    return "; ".join(problems)
