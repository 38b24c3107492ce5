"""rembg's parameters with its defaults and bounds, checked by pydantic as rembg's FastAPI app checks them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.http.rembg.errors import Source, problem, unknown_model
from app.imaging.output import Rgba, parse_colour


class _Fields(BaseModel):
    """rembg's common parameters with its defaults and bounds; pydantic's checks give FastAPI's own messages."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None  # rembg's default is u2net; here it is the server's default network
    a: bool | None = None  # absent: the server's BGR_DECONTAMINATE
    af: int = Field(240, ge=0, le=255)
    ab: int = Field(10, ge=0, le=255)
    ae: int = Field(10, ge=0)
    om: bool = False
    ppm: bool = False
    bgc: str | None = None
    extras: str | None = None


@dataclass(frozen=True)
class Options:
    model: str | None
    alpha_matting: bool | None
    only_mask: bool
    background: Rgba | None


def parse_background(text: str) -> Rgba:
    """rembg's ``r,g,b,a`` (0-255 each; ``r,g,b`` taken as opaque), or, beyond rembg, hex or a colour name."""
    if "," in text:
        parts = text.split(",")
        try:
            values = [int(part.strip()) for part in parts]
        except ValueError:
            values = []
        if len(values) not in (3, 4) or not all(0 <= value <= 255 for value in values):
            raise ValueError("bgc must be r,g,b,a with each 0-255 (or r,g,b, a hex colour or a colour name)")
        return (values[0], values[1], values[2], values[3] if len(values) == 4 else 255)
    try:
        return parse_colour(text)
    except ValueError:
        raise ValueError("bgc must be r,g,b,a with each 0-255 (or r,g,b, a hex colour or a colour name)") from None


def parse_options(values: Mapping[str, tuple[str, Source]], models: tuple[str, ...]) -> tuple[Options, list[dict[str, Any]]]:
    """The options from each parameter's (text, where it came from); the problems found, as FastAPI lists them."""
    problems: list[dict[str, Any]] = []
    texts = {name: text for name, (text, _) in values.items()}
    try:
        fields = _Fields.model_validate(texts)
    except ValidationError as error:
        for found in error.errors(include_url=False):
            name = str(found["loc"][0])
            problems.append({**found, "loc": [values[name][1], name]})
            texts.pop(name, None)
        fields = _Fields.model_validate(texts)  # the rest, so that their problems are listed too, as FastAPI lists them
    background = None
    if fields.bgc:  # rembg ignores an empty bgc
        try:
            background = parse_background(fields.bgc)
        except ValueError as error:
            problems.append(problem("value_error", values["bgc"][1], "bgc", f"Value error, {error}", fields.bgc, {"error": str(error)}))
    if fields.model is not None and fields.model not in models:
        problems.append(unknown_model(values["model"][1], fields.model, models))
    return Options(fields.model, fields.a, fields.om, background), problems
