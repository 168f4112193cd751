"""A real model with real labelled data for the precision bench: RapidOCR's text-direction classifier
(``ch_ppocr_mobile_v2.0_cls_infer.onnx``, PaddleOCR's mobile v2.0: class 0 upright, class 1 turned by 180 degrees)
on text lines rendered here with PIL, half of them turned by 180 degrees.

Writes, under --workdir: ``ocr_direction_cls.onnx`` (the shipped model with its batch named ``batch`` and its image
fixed at RapidOCR's 3x48x192, so autotune can batch it) and ``ocr_direction.npz`` (an accuracy set: ``x`` of shape
(N, 1, 3, 48, 192), preprocessed as RapidOCR feeds its classifier, and ``labels``). Then prints the fp32 top-1 on the
whole set and, with the default int8 recipe for this CPU calibrated on the set's first part (autotune's split), the
fp32 and int8 top-1 on the rest; --keep-in-float K... also ranks the nodes by sensitivity on the calibration part (a
minute on 2 cores) and judges the recipe that keeps the K most sensitive in float, for each K.

    pip install -e '.[bench]'   # rapidocr-onnxruntime, which ships the model, and pillow
    .venv/bin/python bench/ocr_direction_set.py [--samples 500] [--seed 0] [--workdir DIR] [--keep-in-float 4 12]
"""

from __future__ import annotations

import argparse
import math
import string
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autotune.backends._cpu import cpu_device  # noqa: E402
from autotune.inputs import read_inputs  # noqa: E402
from autotune.quantize import Recipe, default_recipe, keep_in_float, quantize, sensitivity  # noqa: E402
from autotune.task_accuracy import (AccuracyJudge, OrtModel, load_set, parse_max_drop, parse_metric,  # noqa: E402
                                    split_sets)

MODEL_FILE = "ch_ppocr_mobile_v2.0_cls_infer.onnx"
CHANNELS, HEIGHT, WIDTH = 3, 48, 192  # RapidOCR's cls_image_shape
FONT_FOLDERS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/truetype/liberation"))
WORDS = ("invoice total amount date street order number page account payment station report customer delivery "
         "north market river office Montag Straße école garçon quantity price tax ref model serial batch").split()


def shipped_model() -> Path:
    """The classifier's file inside the installed rapidocr-onnxruntime package."""
    try:
        import rapidocr_onnxruntime
    except ImportError:
        sys.exit("bench/ocr_direction_set.py needs rapidocr-onnxruntime: pip install -e '.[bench]'")
    return Path(rapidocr_onnxruntime.__file__).parent / "models" / MODEL_FILE


def batchable_copy(source: Path, out: Path) -> Path:
    """The model with a named batch and a fixed 48x192 image (the shipped file leaves all three without names)."""
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load(str(source))
    update_inputs_outputs_dims(model, {model.graph.input[0].name: ["batch", CHANNELS, HEIGHT, WIDTH]},
                               {model.graph.output[0].name: ["batch", 2]})
    onnx.save(model, str(out))
    return out


def fonts() -> list[Path]:
    """DejaVu and Liberation faces where installed (none: PIL's own default font)."""
    found = [p for folder in FONT_FOLDERS for p in sorted(folder.glob("*.ttf"))
             if "Math" not in p.name and "ExtraLight" not in p.name]
    return found


def text_line(rng: np.random.Generator) -> str:
    """Two to five words, some capitalised, with a number now and then."""
    words = [str(rng.choice(WORDS)) for _ in range(rng.integers(2, 6))]
    words = [w.capitalize() if rng.random() < 0.3 else w for w in words]
    if rng.random() < 0.5:
        words.insert(int(rng.integers(0, len(words) + 1)), "".join(rng.choice(list(string.digits), rng.integers(1, 6))))
    return " ".join(words)


def render(rng: np.random.Generator, faces: list[Path]):
    """A text line on a light background, cropped around the text with a random margin, as a detector crops it."""
    from PIL import Image, ImageDraw, ImageFont

    size = int(rng.integers(18, 48))
    font = ImageFont.truetype(str(faces[rng.integers(len(faces))]), size) if faces else ImageFont.load_default(size)
    text = text_line(rng)
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    margin = [int(rng.integers(1, max(2, size // 3))) for _ in range(4)]
    background = tuple(int(v) for v in rng.integers(170, 256, 3))
    ink = tuple(int(v) for v in rng.integers(0, 90, 3))
    image = Image.new("RGB", (right - left + margin[0] + margin[2], bottom - top + margin[1] + margin[3]), background)
    ImageDraw.Draw(image).text((margin[0] - left, margin[1] - top), text, font=font, fill=ink)
    return image


def preprocess(image) -> np.ndarray:
    """RapidOCR's classifier input: height 48, the width that keeps the aspect ratio (at most 192), values scaled to
    [-1, 1], channels first, zeros to the right up to 192."""
    from PIL import Image

    width = min(WIDTH, math.ceil(HEIGHT * image.width / image.height))
    resized = np.asarray(image.resize((width, HEIGHT), Image.BILINEAR), dtype=np.float32)
    padded = np.zeros((CHANNELS, HEIGHT, WIDTH), np.float32)
    padded[:, :, :width] = (resized.transpose(2, 0, 1) / 255 - 0.5) / 0.5
    return padded


def build_set(count: int, seed: int, out: Path) -> Path:
    """``count`` lines, every other one turned by 180 degrees (label 1), in the accuracy-set format."""
    rng = np.random.default_rng(seed)
    faces = fonts()
    labels = np.arange(count) % 2
    rng.shuffle(labels)
    x = np.stack([preprocess(render(rng, faces).rotate(180) if turned else render(rng, faces))[None]
                  for turned in labels])
    np.savez(out, x=x, labels=labels.astype(np.int64))
    return out


def judge_int8(model: Path, out: Path, recipe: Recipe, samples) -> str:
    """The recipe's int8 model calibrated on the split's first part, judged on the rest: one line."""
    inputs = read_inputs(model)
    split = split_sets(samples)
    started = time.monotonic()
    int8 = quantize(model, out, recipe=recipe, calibration=split.calibration, inputs=inputs)
    built = time.monotonic() - started
    judges = [AccuracyJudge(onnx_path=model, inputs=inputs, judged=split.judged, metric=parse_metric(name, labels=True),
                            max_drop=parse_max_drop("1%")) for name in ("top1", "agreement")]
    top1, agreement = (judge.evaluate(OrtModel(int8, inputs, optimized=True).run) for judge in judges)
    return (f"{recipe.describe()} (built in {built:.1f} s, calibrated on {split.calibration.name}); on "
            f"{split.judged.name}: fp32 top-1 {top1.reference:.4f}, int8 top-1 {top1.metric:.4f} (drop "
            f"{top1.drop:+.4f}, {'within' if top1.ok else 'beyond'} 1%), agreement with fp32 {agreement.metric:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=ROOT / ".autotune" / "bench" / "ocr_direction")
    parser.add_argument("--keep-in-float", type=int, nargs="*", default=[], metavar="K")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = batchable_copy(shipped_model(), args.workdir / "ocr_direction_cls.onnx")
    inputs = read_inputs(model)
    samples = load_set(build_set(args.samples, args.seed, args.workdir / "ocr_direction.npz"), inputs)
    whole = AccuracyJudge(onnx_path=model, inputs=inputs, judged=samples, metric=parse_metric("top1", labels=True),
                          max_drop=parse_max_drop("1%"))
    print(f"{samples.name}: {len(samples)} lines, fonts {len(fonts()) or 'PIL default'}; fp32 top-1 "
          f"{whole.reference_metric:.4f}", flush=True)
    recipe = default_recipe(cpu_device().isa_flags)
    int8 = args.workdir / "ocr_direction_cls.int8.onnx"
    print(judge_int8(model, int8, recipe, samples), flush=True)
    if args.keep_in_float:
        started = time.monotonic()
        ranking = sensitivity(model, recipe=recipe, calibration=split_sets(samples).calibration, inputs=inputs,
                              workdir=args.workdir)
        print(f"sensitivity of {len(ranking)} nodes in {time.monotonic() - started:.0f} s; most sensitive: "
              f"{', '.join(f'{name} {error:.2g}' for name, error in ranking[:5])}", flush=True)
        for k in args.keep_in_float:
            print(f"keep {k} in float: {judge_int8(model, int8, keep_in_float(recipe, ranking, k), samples)}",
                  flush=True)


if __name__ == "__main__":
    main()
