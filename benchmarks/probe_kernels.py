"""The compiled kernels' tile shapes on this CPU, layer by layer, against torch's ops and the
machine's float32 matrix-product rate (docs/benchmarks.md, "With column tiles").

    OMP_NUM_THREADS=1 taskset -c 0 .venv/bin/python benchmarks/probe_kernels.py

Each kernel is built with every shape in its list (compiled_kernels.build's `defines`) and timed,
best of ROUNDS, on one chunk of a population forward: 128 models, 16 inputs (the first layer of
cnn_digits at 128); the 3x3 first layers also on the Winograd builds' path from the image. Prints
one table: layer, variant, ms, GFLOP/s, its share of the matrix-product rate on the same threads,
and for the per-model and Winograd kernels the largest error against the exact (float64) result
over the layer's largest output. The defaults in kernels/*.c are the shapes this chose on an
AVX2 EPYC; compiled_kernels.BUILD_VARIANTS lists those each machine times and chooses from at
first use.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from zoo_benchmarks import best_of  # benchmarks/ is on the path of a script run from it

from zooscope.machine import cpu_summary
from zooscope.population import compiled_kernels

ROUNDS = 25
MODELS = 128
INPUTS = 16

# first layers, the im2col product with its 2x2 max-pool: rows (models x channels), taps, width
SLAB_LAYERS = {
    "cnn_s conv1 1->8 5x5": (MODELS * 8, 26, 144 * INPUTS),
    "cnn_digits conv1 1->8 3x3": (MODELS * 8, 10, 9 * 128),
    "cnn3 conv1 3->16 3x3": (MODELS * 16, 28, 225 * INPUTS),
}
SLAB_SHAPES = [  # ROWS, COLS, COL_TILE (a huge tile: every block of rows walks all columns)
    {"ROWS": 4, "COLS": 2, "COL_TILE": 1 << 20},
    {"ROWS": 4, "COLS": 2, "COL_TILE": 2},
    {"ROWS": 4, "COLS": 2, "COL_TILE": 8},
    {"ROWS": 4, "COLS": 2, "COL_TILE": 32},
    {"ROWS": 6, "COLS": 1, "COL_TILE": 8},
    {"ROWS": 3, "COLS": 2, "COL_TILE": 8},
    {"ROWS": 4, "COLS": 3, "COL_TILE": 8},
    {"ROWS": 8, "COLS": 1, "COL_TILE": 8},
    {"ROWS": 8, "COLS": 1, "COL_TILE": 16},
]
# later convolutions on [K, C, H, W, n]: channels, size, outs, kernel, pool after
MODEL_LAYERS = {
    "cnn_s conv2 8->6 5x5 on 12x12, pool 2": (8, 12, 6, 5, 2),
    "cnn_s conv3 6->4 2x2 on 4x4": (6, 4, 4, 2, 1),
    "cnn3 conv2 16->32 3x3 on 15x15, pool 2": (16, 15, 32, 3, 2),
    "cnn3 conv3 32->15 3x3 on 6x6, pool 2": (32, 6, 15, 3, 2),
}
MODEL_SHAPES = [
    *(
        {"MAX_OB": ob, "MAX_JB": jb}
        for ob, jb in ((3, 4), (3, 3), (2, 4), (2, 3), (3, 2), (2, 2), (8, 1), (6, 2), (4, 3))
    ),
    {"MAX_OB": 8, "MAX_JB": 1, "WINOGRAD": 1},  # 3x3 layers with a 2x2 pool: F(2x2, 3x3)
    {"MAX_OB": 6, "MAX_JB": 2, "WINOGRAD": 1},
    {"MAX_OB": 8, "MAX_JB": 1, "WINOGRAD": 2},  # F(4x4, 3x3)
    {"MAX_OB": 6, "MAX_JB": 2, "WINOGRAD": 2},
    {"MAX_OB": 4, "MAX_JB": 3, "WINOGRAD": 2},
]


def matmul_rate() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    return 2 * 2048**3 / best_of(lambda: a @ b, ROUNDS)


def slab_rows(peak: float) -> list[list[str]]:
    rows = []
    for layer, (height, taps, width) in SLAB_LAYERS.items():
        weight, columns = torch.randn(height, taps), torch.randn(taps, 4, width)
        out = torch.empty(height, width)
        flops = 2 * height * taps * 4 * width
        flat = columns.reshape(taps, -1)
        with torch.inference_mode():
            seconds = best_of(
                lambda w=weight, c=flat, h=height: (w @ c).reshape(h, 4, -1).amax(1).relu_(), ROUNDS
            )
        rows.append(_row(layer, "torch: product, amax", seconds, flops, peak))
        for shape in SLAB_SHAPES:
            library = ctypes.CDLL(str(compiled_kernels.build("slab_max_product", None, shape)))
            kernel = compiled_kernels.SlabMaxProduct(library)
            seconds = best_of(lambda k=kernel, w=weight, c=columns, o=out: k(w, c, o, floor=0.0), ROUNDS)
            rows.append(_row(layer, _label(shape), seconds, flops, peak))
    return rows


# the 3x3 first layers again, from the image on a Winograd build's path: channels, size, outs, inputs
SHARED_WINOGRAD_LAYERS = {
    "cnn_digits conv1 1->8 3x3": (1, 8, 8, 128),
    "cnn3 conv1 3->16 3x3": (3, 32, 16, INPUTS),
}
SHARED_WINOGRAD_SHAPES = [
    {"ROWS": 8, "COLS": 1, "WINOGRAD": 1},
    {"ROWS": 8, "COLS": 1, "WINOGRAD": 2},  # 8 filters at once in groups of 16: the defaults
    *({"ROWS": 8, "COLS": 1, "WINOGRAD": 2, "SHARED_ROWS": rows} for rows in (4, 2)),
    {"ROWS": 8, "COLS": 1, "WINOGRAD": 2, "SHARED_GROUP": 64},
]


def shared_winograd_rows(peak: float) -> list[list[str]]:
    """The rates count the im2col product's arithmetic (its slab row above), so a Winograd path
    runs "above" the product's rate."""
    rows = []
    for layer, (channels, size, outs, inputs) in SHARED_WINOGRAD_LAYERS.items():
        height, taps, width = SLAB_LAYERS[layer]
        flops = 2 * height * taps * 4 * width
        image, weight = torch.randn(channels, size, size, inputs), torch.randn(MODELS, outs, channels, 3, 3)
        pooled = (size - 2) // 2
        out = torch.empty(MODELS, outs, pooled, pooled, inputs)
        for shape in SHARED_WINOGRAD_SHAPES:
            library = ctypes.CDLL(str(compiled_kernels.build("slab_max_product", None, shape)))
            kernel = compiled_kernels.SlabMaxProduct(library)
            filters = kernel.winograd_filters(weight, (1, 1), (1, 1), 2)  # once, as a forward call
            seconds = best_of(
                lambda k=kernel, i=image, u=filters, o=out: k.winograd(i, u, None, o, floor=0.0), ROUNDS
            )
            every_model = image.unsqueeze(0).expand(MODELS, *image.shape)
            error = _relative_error(out, every_model, weight, None, 2)
            rows.append(_row(layer, f"{_label(shape)}, from the image", seconds, flops, peak, error))
    return rows


def _relative_error(
    out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, pool: int
) -> float:
    """max |out - exact| / max |exact|, the exact result in float64: x [K, C, H, W, n], weight
    [K, O, C, kh, kw], out [K, O, Ho, Wo, n] after the pool and a ReLU."""
    models, channels, size, _, n = x.shape
    grouped = x.permute(4, 0, 1, 2, 3).reshape(n, models * channels, size, size).double()
    flat_bias = None if bias is None else bias.reshape(-1).double()
    exact = F.conv2d(grouped, weight.flatten(0, 1).double(), flat_bias, groups=models)
    exact = (F.max_pool2d(exact, pool) if pool > 1 else exact).relu()
    exact = exact.view(n, models, -1, *exact.shape[2:]).permute(1, 2, 3, 4, 0)
    return float((out.double() - exact).abs().max() / exact.abs().max())


def model_rows(peak: float) -> list[list[str]]:
    rows = []
    for layer, (channels, size, outs, kernel_size, pool) in MODEL_LAYERS.items():
        x = torch.randn(MODELS, channels, size, size, INPUTS)
        weight, bias = (
            torch.randn(MODELS, outs, channels, kernel_size, kernel_size),
            torch.randn(MODELS, outs),
        )
        conv_size = size - kernel_size + 1
        out = torch.empty(MODELS, outs, conv_size // pool, conv_size // pool, INPUTS)
        flops = 2 * MODELS * outs * channels * kernel_size**2 * conv_size**2 * INPUTS
        grouped = x.permute(4, 0, 1, 2, 3).reshape(INPUTS, MODELS * channels, size, size)
        grouped = grouped.contiguous(memory_format=torch.channels_last)
        filters, biases = weight.reshape(MODELS * outs, channels, kernel_size, kernel_size), bias.reshape(-1)

        def torch_ops(g=grouped, f=filters, b=biases, p=pool) -> torch.Tensor:
            y = F.conv2d(g, f, b, groups=MODELS)
            return (F.max_pool2d(y, p) if p > 1 else y).relu_()

        with torch.inference_mode():
            rows.append(_row(layer, "torch: grouped conv2d", best_of(torch_ops, ROUNDS), flops, peak))
        for shape in MODEL_SHAPES:
            library = ctypes.CDLL(str(compiled_kernels.build("model_conv", None, shape)))
            conv = compiled_kernels.ModelConv(library)
            seconds = best_of(
                lambda c=conv, p=pool, o=out, w=weight, b=bias, x=x: c(
                    x, w, b, o, (1, 1), (1, 1), pool=p, floor=0.0
                ),
                ROUNDS,
            )
            error = _relative_error(out, x, weight, bias, pool)
            rows.append(_row(layer, _label(shape), seconds, flops, peak, error))
    return rows


def _label(shape: dict[str, int]) -> str:
    return " ".join(f"{key}={'all' if value >= 1 << 20 else value}" for key, value in shape.items())


def _row(
    layer: str, variant: str, seconds: float, flops: int, peak: float, error: float | None = None
) -> list[str]:
    rate = flops / seconds
    error_cell = "" if error is None else f"{error:.1e}"
    return [layer, variant, f"{seconds * 1e3:.2f}", f"{rate / 1e9:.1f}", f"{rate / peak:.0%}", error_cell]


def main() -> None:
    torch.manual_seed(0)
    peak = matmul_rate()
    print(f"machine: {cpu_summary()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"matrix product 2048^3: {peak / 1e9:.1f} GFLOP/s; chunk: {MODELS} models x {INPUTS} inputs")
    print()
    print("| layer | variant | ms | GFLOP/s | of the product's rate | max error / largest output |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in slab_rows(peak) + shared_winograd_rows(peak) + model_rows(peak):
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
