"""A run's encoder and decoder as two ONNX graphs (a restoration run's restorer as one), checked against PyTorch before
they are written.

``encoder.onnx`` maps examples (batch, *shape) in the data's own units to codes, and ``decoder.onnx`` codes back to
examples: the standardization of a model built with it is inside the graphs (they call ``encode`` and ``decode``).
The VAE's encoder gives the mean and the log-variance of q(z|x); a rate-distortion model's its integer code (the
entropy coder of ``aekit compress`` is not a graph: its tables stay in the run); a VQ-VAE's its quantized code (the
nearest codewords: an ArgMin and a Gather); PCA's its projection. The batch size is free, and for a model that takes
images of any size (``takes_any_size``: rd-ae --net fully-conv) height and width are too: its decoder then gives
the image at 2^L times the code map's size, which the user crops to the image's own. A model with no code that its
decoder undoes (``gives_codes`` False) but that restores images of any size (red) is exported as ``restorer.onnx``,
``restore`` (images in [0, 1] of any height and width, at least 2^levels, to the same shape; an upscaler's input is
the bicubic enlargement); any other such model is refused.

The graphs are made by ``torch.onnx.export(dynamo=True)`` (torch.export, then onnxscript) and run at once in
onnxruntime on examples the run did not train on (its test split where its data is here, else seeded random inputs
in the data's range, which export.json says): an output further than :data:`TOLERANCE` from PyTorch's, relative to
the largest value of PyTorch's output, refuses the export. export.json beside the graphs names their inputs and
outputs, shapes and value range, the measured differences and the aekit version. Nothing is written unless all of it
is (an atomic folder).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from aekit import __version__
from aekit.atomic import atomic_folder, check_folder, check_output, make_folder
from aekit.data.dataset import as_float32
from aekit.errors import AekitError, DataError, RunError
from aekit.jobs.workflow import held_out
from aekit.training import run_folder

# The file of each graph, and export.json.
FILES = {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "restorer": "restorer.onnx"}
ENCODER, DECODER, RESTORER = FILES.values()
MANIFEST = "export.json"
# The most an ONNX output may differ from PyTorch's, relative to the largest magnitude of PyTorch's output. Both run
# the same float32 operations, but onnxruntime may fuse or reorder them: measured differences are about 1e-7.
TOLERANCE = 1e-5
# The held-out examples the graphs are checked on.
CHECKED = 64
# The change of size (rows, columns) at which a graph of any image size is also checked: odd, unlike the run's.
OTHER_SIZE = (3, 5)
INSTALL = "pip install aekit[export]"


@dataclass
class Graph:
    """One function of the model to export: ``function(model, input)`` gives its outputs, named ``outputs``."""

    name: str
    function: Callable
    input: str
    outputs: tuple[str, ...]


class _Function(nn.Module):
    """A model's function as a module, which is what torch.onnx.export takes."""

    def __init__(self, model: nn.Module, function: Callable):
        super().__init__()
        self.model, self.function = model, function

    def forward(self, x: torch.Tensor):
        return self.function(self.model, x)


def graphs(model: nn.Module) -> tuple[Graph, ...]:
    """The encoder and the decoder of ``model`` as export computes them (a restoration model's restorer), asking the
    model what it can do; the encoder, where there is one, comes first."""
    if not model.gives_codes:
        if model.takes_any_size:
            return (Graph("restorer", lambda m, x: m.restore(x), "x", ("restored",)),)
        raise AekitError(
            f"{type(model).__name__} has no code that its decoder undoes, nor restores images, so it has no graph "
            "to export; export a run of another family"
        )
    if model.variational:
        encoder = Graph("encoder", lambda m, x: m.posterior(m.standardize(x)), "x", ("mean", "log_variance"))
    elif model.takes_any_size:
        encoder = Graph("encoder", lambda m, x: m.map_symbols(x), "x", ("code",))
    else:
        encoder = Graph("encoder", lambda m, x: m.encode(x), "x", ("code",))
    if model.takes_any_size:
        decoder = Graph("decoder", lambda m, z: m.decode_map(z), "code", ("x",))
    else:
        decoder = Graph("decoder", lambda m, z: m.decode(z), "code", ("x",))
    return encoder, decoder


def export_run(run_dir: str | Path, out: str | Path, *, overwrite: bool = False) -> dict:
    """Export the finished run in ``run_dir`` to the new folder ``out`` (see the module's docstring), checked on its
    test split where its data is here; returns what export.json holds. The run folder may be read-only; one that
    another process holds (a training) or that has not finished is refused, as is an ``out`` that exists (unless
    ``overwrite``: a folder by a folder) or is, or holds, the run."""
    run_dir, out = Path(run_dir), Path(out)
    _check_out(out, overwrite, may_hold=(run_dir,))
    with run_folder.RunLock(run_dir, create=False):
        run_folder.read_config(run_dir)
        if not (run_dir / run_folder.METRICS).is_file():
            raise RunError(
                f"{run_dir} is not a finished run (no {run_folder.METRICS}: its training stopped or is still going); "
                f"finish it with `aekit train --resume --out {run_dir}`, then export it"
            )
        model = run_folder.load(run_dir)
        examples = held_out(run_dir, CHECKED)
        source = f"the first {CHECKED} examples of the run's test split"
        return _export(model, out, examples, source, overwrite)


def export(model: nn.Module, out: str | Path, examples=None, *, overwrite: bool = False) -> dict:
    """Export ``model`` (``aekit.load(RUN)``'s, or one trained in Python) to the new folder ``out``, checked on
    ``examples`` (examples it did not train on, (n, *shape) as the model takes them; None: seeded random inputs in
    the data's range); returns what export.json holds."""
    out = Path(out)
    _check_out(out, overwrite)
    if examples is not None:
        examples = as_float32(np.asarray(examples[:CHECKED]))
        if examples.size != len(examples) * math.prod(model.example_shape):
            raise DataError(
                f"examples of shape {examples.shape} were given to check a model that takes {model.example_shape}; "
                "give examples of its data"
            )
    # A copy: the caller's model keeps its device and mode.
    model = copy.deepcopy(model).cpu().eval()
    return _export(model, out, examples, f"the first {CHECKED} examples given", overwrite)


def largest_difference(manifest: dict) -> float:
    """The largest relative difference from PyTorch over every check and every output of an export's graphs."""
    checks = manifest["parity"]["checks"]
    return max(
        value for check in checks for part in check.values() if isinstance(part, dict) for value in part.values()
    )


def _check_out(out: Path, overwrite: bool, may_hold=()) -> None:
    """Refuse, before any work, what cannot be done: the packages missing, or ``out`` not to be written."""
    _onnx_runtime()
    check_folder(out)
    check_output(out, overwrite, folder=True, may_hold=may_hold)


def _export(model: nn.Module, out: Path, examples: np.ndarray | None, source: str, overwrite: bool) -> dict:
    """Export, check and write (see :func:`export`); ``source`` says what ``examples`` are."""
    onnx_runtime = _onnx_runtime()
    if examples is None or len(examples) < 2:
        x, source = _random_inputs(model, model.example_shape), "seeded random inputs in the data's range"
    else:
        x = torch.from_numpy(np.array(examples, np.float32).reshape(len(examples), *model.example_shape))
    parts = graphs(model)
    checks = [(source, x)]
    if model.takes_any_size:
        other = (x.shape[1], *(size + more for size, more in zip(x.shape[2:], OTHER_SIZE)))
        checks.append(("seeded random inputs of another size", _random_inputs(model, other)))
    feeds = [_feeds(parts, model, inputs) for _, inputs in checks]
    files = {graph.name: _exported(model, graph, feeds[0][graph.name][:2]) for graph in parts}
    manifest = _manifest(model, parts, feeds[0])
    parity = {"tolerance": TOLERANCE, "relative_to": "the largest magnitude of PyTorch's output", "checks": []}
    for (label, inputs), feed in zip(checks, feeds):
        differences = {
            graph.name: _difference(onnx_runtime, files[graph.name], model, graph, feed[graph.name]) for graph in parts
        }
        parity["checks"].append({"inputs": label, "count": len(inputs), "size": list(inputs.shape[1:]), **differences})
        worst = max(
            (value, f"{name} {output}") for name, outputs in differences.items() for output, value in outputs.items()
        )
        if not worst[0] <= TOLERANCE:
            raise AekitError(
                f"the ONNX {worst[1]} differs from PyTorch's by {worst[0]:.2g} (relative) on {label}, more than "
                f"{TOLERANCE:g}; nothing was written: report it with the run's config.json"
            )
    manifest["parity"] = parity
    make_folder(out.parent)
    with atomic_folder(out, replace=overwrite) as filling:
        for name, graph_bytes in files.items():
            (filling / FILES[name]).write_bytes(graph_bytes)
        (filling / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _onnx_runtime():
    """onnxruntime, and a one-line refusal where it or the exporter's packages are missing."""
    try:
        import onnx  # noqa: F401  (the exporter needs it, and onnxscript)
        import onnxruntime
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise AekitError(f"ONNX export needs {error.name or 'onnx'}, which is not installed; `{INSTALL}`") from None
    return onnxruntime


def _random_inputs(model: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """Seeded inputs in the data's range: uniform in [0, 1] for intensities, else standard normal in the model's
    standardized units (each feature's mean plus its standard deviation times N(0, 1))."""
    generator = torch.Generator().manual_seed(0)
    if _value_range(model) is not None:
        return torch.rand((CHECKED, *shape), generator=generator)
    with torch.no_grad():
        return model.standardize.inverse(torch.randn((CHECKED, *shape), generator=generator))


def _value_range(model: nn.Module) -> list[float] | None:
    """The range of the examples: [0, 1] for images and data under the cross-entropy (intensities), else None."""
    return [0.0, 1.0] if len(model.example_shape) == 3 or model.likelihood.name == "bernoulli" else None


def _outputs(graph: Graph, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    y = graph.function(model, x)
    return tuple(y) if isinstance(y, (tuple, list)) else (y,)


def _feeds(parts: tuple[Graph, ...], model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each graph's input for examples ``x``: ``x`` itself, or the code (the first output) the encoder gives of it."""
    if all(graph.input == "x" for graph in parts):
        return {graph.name: x for graph in parts}
    with torch.no_grad():
        code = _outputs(parts[0], model, x)[0]
    return {graph.name: x if graph.input == "x" else code for graph in parts}


def _exported(model: nn.Module, graph: Graph, sample: torch.Tensor) -> bytes:
    """The ONNX bytes of ``graph``, its batch size free (and height and width where the model takes any size)."""
    axes = {0: torch.export.Dim("batch", min=1)}
    if model.takes_any_size:
        axes.update({2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC})
    try:
        with _quiet():
            program = torch.onnx.export(
                _Function(model, graph.function).eval(),
                (sample,),
                dynamo=True,
                input_names=[graph.input],
                output_names=list(graph.outputs),
                dynamic_shapes=(axes,),
                verbose=False,
            )
            return program.model_proto.SerializeToString()
    except Exception as error:  # the exporter raises many types for what it cannot express
        raise AekitError(
            f"the {graph.name} of {type(model).__name__} cannot be exported to ONNX ({_first_line(error)}); export "
            "another run or report it"
        ) from None


def _first_line(error: Exception) -> str:
    """An exception's message in one short line (its first), or its type where it has none."""
    message = str(error).strip()
    return message.splitlines()[0][:200] if message else type(error).__name__


@contextlib.contextmanager
def _quiet():
    """The exporter's progress lines, warnings and log messages (e.g. about torchvision) kept off the terminal; its
    debug records are not even made (where a handler listens to them, as pytest's does, tracing takes twice as long)."""
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(disabled)


def _difference(onnx_runtime, graph_bytes: bytes, model, graph: Graph, x: torch.Tensor) -> dict[str, float]:
    """Each output's largest difference between onnxruntime and PyTorch on ``x``, relative to PyTorch's largest
    magnitude (infinite where their shapes differ)."""
    options = onnx_runtime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    try:
        session = onnx_runtime.InferenceSession(graph_bytes, options, providers=["CPUExecutionProvider"])
        got = session.run(list(graph.outputs), {graph.input: x.numpy()})
    except Exception as error:  # onnxruntime raises its own types for a graph it cannot load or run
        raise AekitError(
            f"onnxruntime cannot run the exported {graph.name} ({_first_line(error)}); nothing was written: report "
            "it with the run's config.json"
        ) from None
    with torch.no_grad():
        expected = _outputs(graph, model, x)
    differences = {}
    for name, value, reference in zip(graph.outputs, got, expected):
        reference = reference.double().numpy()
        if value.shape != reference.shape:  # a size the graph took for a constant when it was traced
            differences[name] = float("inf")
            continue
        scale = max(float(np.abs(reference).max(initial=0.0)), float(np.finfo(np.float32).tiny))
        differences[name] = float(np.abs(value.astype(np.float64) - reference).max(initial=0.0)) / scale
    return differences


def _manifest(model: nn.Module, parts: tuple[Graph, ...], feed: dict[str, torch.Tensor]) -> dict:
    """What export.json says of the graphs, before the parity figures."""
    with torch.no_grad():
        given = {graph.name: feed[graph.name][:2] for graph in parts}
        made = {graph.name: _outputs(graph, model, given[graph.name]) for graph in parts}
    axes = {graph.name: ({}, {}) for graph in parts}  # each graph's named axes beyond the batch: input, outputs
    if model.takes_any_size:
        image, code_map = {2: "height", 3: "width"}, {2: "code_height", 3: "code_width"}
        axes["restorer"] = (image, image)
        if "decoder" in made:
            stride = made["decoder"][0].shape[-1] // given["decoder"].shape[-1]
            axes["encoder"] = (image, {2: f"ceil(height/{stride})", 3: f"ceil(width/{stride})"})
            axes["decoder"] = (code_map, {2: f"{stride}*code_height", 3: f"{stride}*code_width"})
    config = getattr(model, "config", None)
    manifest = {
        "aekit_version": __version__,
        "model": config.family if config is not None else type(model).__name__,
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        "standardized_inside": bool(model.standardize.enabled),
        "value_range": _value_range(model),
    }
    for graph in parts:
        inputs, outputs = axes[graph.name]
        manifest[graph.name] = {
            "file": FILES[graph.name],
            "inputs": [_tensor(graph.input, given[graph.name], inputs)],
            "outputs": [_tensor(name, y, outputs) for name, y in zip(graph.outputs, made[graph.name])],
        }
    return manifest


def _tensor(name: str, value: torch.Tensor, axes: dict[int, str]) -> dict:
    """A graph's input or output as export.json names it: its shape, "batch" first, and its type."""
    shape = ["batch", *(axes.get(axis, size) for axis, size in enumerate(value.shape[1:], 1))]
    return {"name": name, "shape": shape, "dtype": str(value.dtype).removeprefix("torch.")}
