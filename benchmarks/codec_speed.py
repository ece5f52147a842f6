"""Link codecs on real activations: compression ratio, encode/decode speed and error of every codec.

Captures the intermediate tensors of resnet18 and mobilenet_v2 (torchvision architectures with
seed-0 random weights, one 1x3x224x224 N(0,1) input, built by `coinfer.capture.build_model`): the
output of every ReLU/ReLU6 call, of every residual block and of the pools. For each codec it
prints, as medians over the tensors:

- `wire/raw`: encoded bytes (meta + payload) over the raw float32 bytes;
- `compressor`: quantised bytes over compressed bytes (the ratio `COMPRESSION_RATIO` needs);
- encode and decode speed in raw MB/s (one thread; each tensor's time is the median of REPEATS);
- `err/range`: max abs error over (max - min) of the tensor (median, and the worst tensor).

Then the two tables of `coinfer.codec_model` ready to paste. Timings are for this machine only and
noisy on a shared one; never asserted in tests.

Figures on this project's machine (AMD EPYC, 2 shared cores, numpy 2.4; 79 tensors, 39.8 MB,
median 49% zeros) are in `docs/cost-model.md`. fp16's worst err/range is 1.0: mobilenet_v2's
deepest random-weight activations are ~1e-7, below float16's smallest subnormal step (6e-8), so
they round to 0 or one step (the absolute error stays <= 3e-8). The same tiny values make the
float16 cast ten times slower on mobilenet_v2 (0.14 GB/s) than on resnet18 (1.5 GB/s).

    .venv/bin/python benchmarks/codec_speed.py [--models resnet18,mobilenet_v2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

from coinfer.capture.api import build_model
from coinfer.codec_model import ALL_CODECS, Codec
from coinfer.graph import ModelSource
from coinfer.runtime.codec import decode, encode


def activations(model_name: str) -> list[np.ndarray]:
    """The float32 outputs of every ReLU/ReLU6 call, residual block and pool of one forward pass."""
    import torch

    model, inputs = build_model(ModelSource(f"torchvision:{model_name}", ((1, 3, 224, 224),), seed=0))
    captured: list[np.ndarray] = []
    kinds = ("ReLU", "ReLU6", "BasicBlock", "Bottleneck", "InvertedResidual", "MaxPool2d", "AdaptiveAvgPool2d")

    def keep(_module: Any, _inputs: Any, output: Any) -> None:
        captured.append(output.detach().numpy().copy())  # copy: in-place ReLUs overwrite it later

    handles = [m.register_forward_hook(keep) for m in model.modules() if type(m).__name__ in kinds]
    with torch.no_grad():
        model(*inputs)
    for h in handles:
        h.remove()
    return captured


def timed_s(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(codec: Codec, tensors: list[np.ndarray], repeats: int) -> dict[str, float]:
    wire, compressor, enc, dec, err = [], [], [], [], []
    for a in tensors:
        encoded = encode(a, codec)
        out = decode(encoded.meta, encoded.payload, "float32", a.shape, codec)
        wire.append(encoded.nbytes / a.nbytes)
        if codec.compress != "none":
            plain = encode(a, Codec(codec.quantise))
            compressor.append(memoryview(plain.payload).nbytes / memoryview(encoded.payload).nbytes)
        enc.append(a.nbytes / timed_s(lambda a=a: encode(a, codec), repeats))
        dec.append(a.nbytes / timed_s(lambda a=a, e=encoded: decode(e.meta, e.payload, "float32", a.shape, codec),
                                      repeats))
        span = float(a.max() - a.min())
        err.append(float(np.abs(out - a).max()) / span if span else 0.0)
    return {"wire": statistics.median(wire), "compressor": statistics.median(compressor) if compressor else 1.0,
            "encode": statistics.median(enc), "decode": statistics.median(dec),
            "err": statistics.median(err), "worst_err": max(err)}


def main() -> None:
    import torch

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tensors = [t for name in args.models.split(",") for t in activations(name)]
    zeros = statistics.median(float((t == 0).mean()) for t in tensors)
    print(f"{len(tensors)} tensors from {args.models}, {sum(t.nbytes for t in tensors) / 1e6:.1f} MB, "
          f"median {zeros:.0%} zeros\n")
    print(f"{'codec':20} {'wire/raw':>9} {'compressor':>10} {'enc MB/s':>9} {'dec MB/s':>9} {'err/range':>10} "
          f"{'worst':>9}")
    results = {}
    for codec in ALL_CODECS:
        r = results[codec] = measure(codec, tensors, args.repeats)
        print(f"{codec!s:20} {r['wire']:9.3f} {r['compressor']:10.2f} {r['encode'] / 1e6:9.0f} "
              f"{r['decode'] / 1e6:9.0f} {r['err']:10.2e} {r['worst_err']:9.2e}")
    print("\nCOMPRESSION_RATIO = {")
    for c in ALL_CODECS:
        if c.compress != "none":
            print(f"    ({c.quantise!r}, {c.compress!r}): {results[c]['compressor']:.2f},")
    print("}\nCODEC_SPEED_BYTES_PER_S = {")
    for c in ALL_CODECS:
        if c != Codec():
            print(f"    ({c.quantise!r}, {c.compress!r}): ({results[c]['encode']:.3g}, {results[c]['decode']:.3g}),")
    print("}")


if __name__ == "__main__":
    main()
