"""The project's IS-Net weights as an fp32 ONNX file inside rembg's models folder.

rembg's ``dis_custom`` session refuses a ``model_path`` outside its home (``U2NET_HOME``),
so the file is exported straight there. The export is this project's own ``ISNet`` module
(the same weights the service runs), traced at rembg's fixed 1 x 3 x 1024 x 1024 input; its
single output is the finest side output's logits, which is what ``dis_custom`` reads as
``outputs[0][:, 0]``.

    python bench/rembg_model.py [--home ~/.cache/bgremoval/rembg]   # prints the model path
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "model_weights" / "isnet-general.safetensors"
DEFAULT_HOME = Path(os.environ.get("BGR_WEIGHTS_CACHE", "~/.cache/bgremoval")).expanduser() / "rembg"
MODEL_NAME = "isnet-general-fp32.onnx"
REMBG_SIDE = 1024  # dis_custom always resizes to 1024²


def export_fp32_onnx(weights: Path, out: Path) -> Path:
    """Export (or reuse, when newer than the weights) the fp32 ONNX graph at ``out``."""
    if out.exists() and out.stat().st_mtime >= weights.stat().st_mtime:
        return out
    import torch

    sys.path.insert(0, str(ROOT))
    from app.inference.isnet import load_isnet

    model = load_isnet(weights)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    with torch.inference_mode():
        # The TorchScript exporter: one self-contained file (weights inline, 176 MB), no onnxscript needed.
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, REMBG_SIDE, REMBG_SIDE),),
            str(partial),
            input_names=["input"],
            output_names=["logits"],
            opset_version=17,
            dynamo=False,
        )
    partial.replace(out)  # never leave a half-written model where rembg would load it
    return out


def model_path(home: Path = DEFAULT_HOME, weights: Path = WEIGHTS) -> Path:
    return export_fp32_onnx(weights, home.expanduser() / "models" / "dis_custom" / MODEL_NAME)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="rembg's U2NET_HOME")
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    args = parser.parse_args()
    print(model_path(args.home, args.weights))


if __name__ == "__main__":
    main()


GENERAL_USE = "isnet-general-use"  # rembg's session name for these weights; its published graph ends in a sigmoid


def general_use_home(home: Path = DEFAULT_HOME, weights: Path = WEIGHTS) -> Path:
    """A rembg home (``U2NET_HOME``) whose ``isnet-general-use`` session finds this project's weights and so runs
    without a download: the fp32 graph above with a sigmoid appended, as rembg's published file ends in one (its
    session min-max stretches ``outputs[0]``, so logits would give a different matte). Returns the home."""
    import onnx
    from onnx import helper

    out = home.expanduser() / "models" / GENERAL_USE / f"{GENERAL_USE}.onnx"
    logits = model_path(home, weights)
    if out.exists() and out.stat().st_mtime >= logits.stat().st_mtime:
        return home.expanduser()
    graph = onnx.load(str(logits))
    name = graph.graph.output[0].name
    graph.graph.node.append(helper.make_node("Sigmoid", [name], ["probabilities"]))
    output = graph.graph.output[0]
    output.name = "probabilities"
    partial = out.with_suffix(".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(graph, str(partial))
    partial.replace(out)
    return home.expanduser()
