"""Encode and decode throughput of the ONNX graphs of `aekit export` in onnxruntime against PyTorch eager, on this
CPU, at one thread and at all, for the MNIST models (28 x 28 grey images, code 10: the AE with the MLP 256-128 and
with the conv net 32-64, and the VAE with the MLP; freshly initialised, seed 0, as the work does not depend on the
weights), at batch 1 and batch 256. Written to bench/RESULTS.md ("## ONNX export: onnxruntime against PyTorch").

Each figure is the best of --repeats timings of as many calls as fill --seconds (after one warm-up call): examples
a second. PyTorch runs the very functions the graphs were traced from, under torch.inference_mode(); onnxruntime the
exported graphs with its default optimizations, sequential execution.

    env -u OMP_NUM_THREADS python -m bench.onnx_speed [--shared]     # about a minute; "all": every core torch sees
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch

from aekit.models import build_model, model_config
from aekit.uses.export import DECODER, ENCODER, export, graphs, largest_difference
from bench.mnist_runs import RESULTS, write_section

SECTION = "## ONNX export: onnxruntime against PyTorch"
MODELS = {
    "AE, MLP 256-128": ("ae", {"net": "mlp", "hidden": (256, 128)}),
    "AE, conv 32-64": ("ae", {"net": "conv", "hidden": (32, 64)}),
    "VAE, MLP 256-128": ("vae", {"net": "mlp", "hidden": (256, 128)}),
}
BATCHES = (1, 256)
# What --shared adds: the cores were busy with other work while it ran.
SHARED = (
    " The machine's {} cores were busy with another benchmark throughout: at all threads PyTorch's OpenMP threads wait "
    "on each other for a core (a barrier per layer), which is what the low PyTorch figures of those rows measure more "
    "than either engine; the one-thread rows are the fair comparison here."
)


def _rate(call, examples: int, seconds: float, repeats: int) -> float:
    """Examples a second of ``call`` (one batch of ``examples``): the best of ``repeats`` timings."""
    call()
    best = 0.0
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds or calls == 0:
            call()
            calls += 1
        best = max(best, calls * examples / elapsed)
    return best


def _eager(function, model, value) -> None:
    with torch.inference_mode():
        function(model, value)


def _session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure(label: str, family: str, fields: dict, folder: Path, threads: dict, seconds: float, repeats: int):
    """Rows of (model, part, batch, threads, PyTorch's rate, onnxruntime's rate) for one model."""
    torch.manual_seed(0)
    model = build_model(model_config(family, (1, 28, 28), code_dim=10, **fields)).eval()
    out = folder / family / fields["net"]
    manifest = export(model, out)
    encoder, decoder = graphs(model)
    rows = []
    for batch in BATCHES:
        x = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            code = encoder.function(model, x)
            code = code[0] if isinstance(code, tuple) else code
        for name, graph, path, value in (("encode", encoder, ENCODER, x), ("decode", decoder, DECODER, code)):
            array = value.numpy()
            for shown, count in threads.items():
                torch.set_num_threads(count)
                pytorch = _rate(functools.partial(_eager, graph.function, model, value), batch, seconds, repeats)
                # The session is made after PyTorch's timing and dropped after its own, so that neither engine's
                # idle threads (which spin for a while) take cores from the other's.
                run = functools.partial(_session(out / path, count).run, None, {graph.input: array})
                rate = _rate(run, batch, seconds, repeats)
                del run
                rows.append((label, name, batch, shown, pytorch, rate))
                print(" | ".join(map(str, rows[-1][:4])), f"{pytorch:.0f} {rate:.0f}", flush=True)
    return rows, largest_difference(manifest)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=0.25, help="length of one timing (default: 0.25)")
    parser.add_argument("--repeats", type=int, default=3, help="timings of each figure, the best kept (default: 3)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the Markdown file whose section is rewritten")
    parser.add_argument("--shared", action="store_true", help="say in the section that other work shared the cores")
    args = parser.parse_args(argv)
    everything = torch.get_num_threads()
    threads = {"1": 1, f"all ({everything})": everything}
    rows, parity = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for label, (family, fields) in MODELS.items():
            measured, parity[label] = measure(label, family, fields, Path(folder), threads, args.seconds, args.repeats)
            rows += measured
    torch.set_num_threads(everything)
    table = [
        "| model | part | batch | threads | PyTorch eager, examples/s | onnxruntime, examples/s | ratio |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: |",
    ]
    table += [f"| {m} | {p} | {b} | {t} | {e:,.0f} | {o:,.0f} | {o / e:.2f} |" for m, p, b, t, e, o in rows]
    slower = [f"{m} {p} at batch {b}, {t} threads" for m, p, b, t, e, o in rows if o < e]
    text = "\n".join(
        [
            SECTION,
            "",
            f"`python -m bench.onnx_speed` (OMP_NUM_THREADS unset): torch {torch.__version__}, onnxruntime "
            f"{onnxruntime.__version__}, on this machine's CPU ({everything} threads); each figure is the best of a "
            "few timings (they vary by up to tens of percent between runs). The "
            "graphs are those of `aekit export` (its parity check passed: largest relative difference from PyTorch "
            + "; ".join(f"{label}: {value:.1g}" for label, value in parity.items())
            + "); freshly initialised MNIST models, code 10."
            + (SHARED.format(everything) if args.shared else ""),
            "",
            *table,
            "",
            "onnxruntime was slower than PyTorch eager for: " + "; ".join(slower) + "."
            if slower
            else "onnxruntime was at least as fast as PyTorch eager everywhere.",
        ]
    )
    write_section(args.results, SECTION, text)
    print(f"written to {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
