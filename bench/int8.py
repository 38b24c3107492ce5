"""int8 IS-Net by post-training quantisation with accuracy control (NNCF on OpenVINO), then the quality gate.

    .venv/bin/pip install nncf                 # not a dependency: a set-up-time experiment
    python bench/int8.py [--max-drop 0.005] [--out bench/results/int8] [--gate]

Calibration and the accuracy control's own validation use scikit-image's bundled sample photos
(never evaluation photos): calibration on astronaut, coffee, rocket, the left motorcycle, the
immunohistochemistry slide and the Hubble field, with their mirror images; validation on the cat
(chelsea), the right motorcycle, the retina and the colour wheel. The accuracy-control metric is the
mean IoU at 0.5 between the int8 matte and OpenVINO f32's on the validation photos; NNCF quantises
every convolution it can, then puts back in float the ones that cost the metric most until the drop
is at most ``--max-drop``. The quantised IR is written to ``--out``; the layers left in float run in
bf16 where the CPU has native bf16.

Then, in turns, one 1024² forward each of the int8 model and the bf16 one (medians), and with
``--gate`` bench/runtime_gate.py's gate on every evaluation set with the int8 IS-Net served (the sky
network as auto serves it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from app.catalogue import CATALOGUE, DEFAULT_MODEL  # noqa: E402
from app.inference.ort_backend import onnx_name  # noqa: E402

WEIGHTS = ROOT / "model_weights" / "isnet-general.safetensors"
SIDE = 1024
CALIBRATION = ("astronaut", "coffee", "rocket", "motorcycle_left", "immunohistochemistry", "hubble_deep_field")
VALIDATION = ("chelsea", "motorcycle_right", "retina", "colorwheel")


def sample_photo(name: str) -> np.ndarray:
    from skimage import data

    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        return left if name == "motorcycle_left" else right
    return np.asarray(getattr(data, name)())[..., :3]


def model_input(rgb: np.ndarray) -> np.ndarray:
    """1 x 3 x SIDE x SIDE float32, as the engine feeds IS-Net: bilinear resize, (x / scale - mean) / std."""
    p = CATALOGUE[DEFAULT_MODEL].preprocess
    resized = np.asarray(Image.fromarray(rgb).resize((SIDE, SIDE), Image.BILINEAR), dtype=np.float32)
    x = (resized - np.float32(p.mean[0] * p.pixel_scale)) / np.float32(p.std[0] * p.pixel_scale)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def inputs(names: tuple[str, ...], mirrored: bool) -> list[np.ndarray]:
    photos = [sample_photo(name) for name in names]
    if mirrored:
        photos += [photo[:, ::-1] for photo in photos]
    return [model_input(np.ascontiguousarray(photo)) for photo in photos]


def matte(compiled, x: np.ndarray) -> np.ndarray:
    logits = compiled(x)[compiled.output(0)]
    return 1 / (1 + np.exp(-logits[0, 0]))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = ((a >= 0.5) | (b >= 0.5)).sum()
    return float(((a >= 0.5) & (b >= 0.5)).sum() / union) if union else 1.0


def median_forward(compiled, x: np.ndarray, reps: int) -> float:
    request = compiled.create_infer_request()
    request.infer({0: x})
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        request.infer({0: x})
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-drop", type=float, default=0.005, help="most mean IoU (against f32's mattes) the int8 model may lose")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "int8")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--gate", action="store_true", help="also run bench/runtime_gate.py's gate with the int8 IS-Net served")
    parser.add_argument("--reuse", action="store_true", help="take the int8 IR already in --out instead of quantising again")
    args = parser.parse_args()
    import nncf
    import openvino as ov

    core = ov.Core()
    graph = WEIGHTS.parent / onnx_name(WEIGHTS)
    xml = args.out / "isnet-general-int8.xml"
    validation = inputs(VALIDATION, mirrored=False)
    f32 = core.compile_model(str(graph), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    references = [matte(f32, x) for x in validation]

    def validate(compiled, items) -> tuple[float, list[float]]:
        scores = [iou(matte(compiled, x), reference) for x, reference in zip(items, references)]
        return float(np.mean(scores)), scores

    report: dict[str, object] = {"max_drop": args.max_drop, "calibration": CALIBRATION, "validation": VALIDATION}
    if not (args.reuse and xml.exists()):
        model = core.read_model(str(graph))
        model.reshape([1, 3, SIDE, SIDE])  # static, as NNCF's statistics collection wants
        started = time.perf_counter()
        quantised = nncf.quantize_with_accuracy_control(
            model,
            nncf.Dataset(inputs(CALIBRATION, mirrored=True)),
            nncf.Dataset(validation),
            validate,
            max_drop=args.max_drop,
            drop_type=nncf.DropType.ABSOLUTE,
            preset=nncf.QuantizationPreset.MIXED,  # asymmetric activations: IS-Net's are ReLU outputs and sums
            subset_size=2 * len(CALIBRATION),
        )
        report["quantise_s"] = round(time.perf_counter() - started, 1)
        args.out.mkdir(parents=True, exist_ok=True)
        ov.save_model(quantised, str(xml), compress_to_fp16=False)
    quantised = core.read_model(str(xml))
    fake_quantize = sum(op.get_type_name() == "FakeQuantize" for op in quantised.get_ordered_ops())
    convolutions = sum(op.get_type_name() == "Convolution" for op in quantised.get_ordered_ops())
    report["fake_quantize_ops"] = fake_quantize
    report["convolutions"] = convolutions
    int8 = core.compile_model(quantised, "CPU", {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY"})
    bf16 = core.compile_model(str(graph), "CPU", {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY"})
    report["validation_iou_int8"] = validate(int8, validation)[1]
    report["validation_iou_bf16"] = validate(bf16, validation)[1]
    x = validation[0]
    turns = {"int8": [], "bf16": []}
    for _ in range(2):  # in turns, so both see the same load
        for name, compiled in (("int8", int8), ("bf16", bf16)):
            turns[name].append(median_forward(compiled, x, args.reps))
    report["forward_s"] = {name: round(statistics.median(values), 4) for name, values in turns.items()}
    print(json.dumps(report, indent=2), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "int8.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.gate:
        return gate_int8(xml)
    return 0


def gate_int8(xml: Path) -> int:
    """bench/runtime_gate.py's gate, with the int8 IR in place of the IS-Net graph in what auto serves."""
    import runtime_gate

    from app.inference.engine import load_engines
    from app.inference.openvino_backend import OvModel
    from app.settings import Settings

    settings = Settings.from_env()
    engines = load_engines(settings)
    engine = engines[DEFAULT_MODEL]
    precision = engine.choice.precision if engine.choice is not None else "float32"
    engine.model = OvModel(xml, precision if precision != "float32" else "float32", requests=engine.requests)
    return runtime_gate.main(["--json", str(xml.parent / "gate-int8.json")], engines=engines, label="int8 (NNCF, accuracy control)")


if __name__ == "__main__":
    sys.exit(main())
