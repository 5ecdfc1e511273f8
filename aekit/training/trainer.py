"""One training loop for every model.

An epoch is a seeded permutation cut into batches, taken from a batch source (:mod:`aekit.training.batches`): the whole
dataset on the training device (the step gathers its batch by indices), or streamed from the dataset's arrays (a
memory map) by a background thread. Each batch runs the model's phases in turn (one for most models;
reconstruction, discriminator and generator for the adversarial auto-encoder), each with its own Adam. Losses
accumulate on the device and are read once per logging interval, so the loop never waits on the device in between.
After each epoch the test loss is measured and the checkpoint handed to the run's sink (:class:`RunSink`; the trainer
writes no file itself); ``resume=True`` continues from it with the same result as a run that was never interrupted
(the RNG states and the data order are part of the checkpoint). SIGINT and SIGTERM stop after the current step with
a checkpoint of the position inside the epoch, so even a stop mid-epoch resumes exactly, with either batch source.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from aekit.data import Dataset
from aekit.errors import AekitError, Interrupted, TrainingDiverged, TrainingStopped
from aekit.models import ModelConfig, Phase
from aekit.models.base import device_of, float_batch
from aekit.models.config import on_meta
from aekit.models.inference import batches, evaluating
from aekit.naming import option as named
from aekit.training import distributed, run_folder
from aekit.training.batches import BatchSource, free_memory, make_source
from aekit.training.graphed import GraphedStep
from aekit.training.settings import TrainSettings


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AekitError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    instead = f"use {named('device', 'cpu')} or {named('device', 'auto')}"
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AekitError(f"{named('device', name)} was asked for but no CUDA GPU is available; {instead}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise AekitError(f"{named('device', name)} was asked for but MPS is not available; {instead}")
    return device


# The float32 copies of its weights that training holds: the weights, their gradients and Adam's two moments.
TRAINING_COPIES = 4


def check_model_fits(config: ModelConfig, device: torch.device) -> None:
    """Refuse, before any of it is allocated, the model of ``config`` where it cannot be trained on ``device``: its
    parameters (counted on the meta device) as :data:`TRAINING_COPIES` float32 copies take more than the device's free
    memory (or, for another device, one copy more than the host's, where it is built first). The message names the
    sizes the model takes from (its config's ``sized_by``: hidden layers and code, a restoration net's width, levels
    and blocks) and the memory they need; activations come on top."""
    sizes = " and ".join(named(name, getattr(config, name)) for name in config.sized_by)
    try:
        model = on_meta(config)
    except (RuntimeError, OverflowError, ValueError, TypeError):  # sizes past what torch can even shape
        raise AekitError(f"{sizes} make a model larger than PyTorch can hold; use smaller sizes") from None
    count = sum(t.numel() for t in itertools.chain(model.parameters(), model.buffers()))
    cpu = torch.device("cpu")
    for where, copies in ((device, TRAINING_COPIES), *(((cpu, 1),) if device.type != "cpu" else ())):
        need, free = count * 4 * copies, free_memory(where)
        if free is not None and need > free:
            what = "to train it (weights, gradients and Adam's two moments)" if copies > 1 else "to build it"
            raise AekitError(
                f"{sizes} make a model of {count:,} parameters, {need / 2**30:,.1f} GiB of float32 on {where} "
                f"{what}, more than the {free / 2**30:,.1f} GiB free there; use smaller sizes"
            )


@torch.no_grad()
def mean_loss(
    model: torch.nn.Module, x: torch.Tensor | np.ndarray, batch_size: int = 1024, seed: int = 0
) -> dict[str, float]:
    """The model's loss and its parts averaged over ``x`` in evaluation mode.

    ``x`` is a tensor, or an array (memory-mapped or not) whose blocks of ``batch_size`` rows are taken to the
    model's device one at a time. Randomness inside the loss (the VAE's sample) comes from a fixed seed on a forked
    RNG, so the figure is reproducible and training's own random stream is left untouched.
    """
    sums: dict[str, torch.Tensor] = {}
    device = device_of(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), evaluating(model):
        torch.manual_seed(seed)
        for batch in batches(x, batch_size, model):
            loss = model.loss(batch)
            for name, value in {"loss": loss.total, **loss.parts}.items():
                sums[name] = sums.get(name, 0) + value * len(batch)
    return {name: (total / len(x)).item() for name, total in sums.items()}


def _rng_state(generator: torch.Generator) -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "data_order": generator.get_state(),
        "numpy": torch.from_numpy(np.frombuffer(np.random.get_state()[1].tobytes(), dtype=np.uint8).copy()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["data_order"])
    keys = np.frombuffer(state["numpy"].numpy().tobytes(), dtype=np.uint32)
    np.random.set_state(("MT19937", keys, 624, 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunSink(Protocol):
    """Where a training's output goes: the trainer hands it checkpoints and finished epochs, and writes no file itself
    (:class:`aekit.training.run_folder.RunFolder` keeps them in a run folder). Under torchrun rank 0 alone hands
    anything to it."""

    name: str
    """How messages name where the run is kept ("continue with --resume from NAME")."""

    def checkpoint(self, state: dict) -> None:
        """Keep the loop state: after every epoch (before :meth:`epochs`), and where a signal stops one."""

    def epochs(self, history: list[dict], model: torch.nn.Module | None) -> None:
        """Keep the records of the finished epochs and, unless None, the model as the last of them left it: after
        that epoch's checkpoint, and again on a resume (the run may have failed between the two)."""

    def restore(self) -> dict:
        """The loop state kept last, to resume from; raises an :class:`AekitError` where none was kept."""

    def last_checkpoint(self) -> str | None:
        """How messages name the checkpoint kept last, or None where none was kept."""


class _StopRequest:
    """Turns SIGINT and SIGTERM into a request the loop honours after its current step; a second signal of the same
    kind interrupts at once."""

    def __init__(self):
        self.signal_number: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number, frame):
        if self.signal_number is not None:
            raise Interrupted(number)
        self.signal_number = number


class _Tally:
    """An epoch's running sums of the loss parts, its step count and the first step whose loss was not finite, kept
    on the device and updated in place: no synchronisation, and the updates are captured in the step's CUDA graph."""

    def __init__(self, device: torch.device):
        self.sums: dict[str, torch.Tensor] = {}
        self.step = torch.zeros((), dtype=torch.int64, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)

    def start(self, step: int, sums: dict[str, torch.Tensor]) -> None:
        """Begin an epoch at ``step`` (0, or where a stopped one is resumed) with the sums saved so far."""
        self.step.fill_(step)
        self.first_bad.fill_(-1)
        for name, total in self.sums.items():
            total.copy_(sums[name]) if name in sums else total.zero_()
        for name in sums.keys() - self.sums.keys():
            self.sums[name] = sums[name].to(self.step.device).clone()

    def add(self, parts: dict[str, torch.Tensor]) -> None:
        self.step.add_(1)
        for name, value in parts.items():
            if name in self.sums:
                self.sums[name].add_(value)
            else:  # the epoch's first step; a CUDA graph's capture follows eager warm-up steps, so never in one
                self.sums[name] = value.clone()
        bad = ~torch.isfinite(parts["loss"]) & (self.first_bad < 0)
        self.first_bad.copy_(torch.where(bad, self.step, self.first_bad))


def learning_rate_factor(step: int, total_steps: int, schedule: str, warmup_steps: int = 0) -> float:
    """The factor of --lr after ``step`` steps of ``total_steps``: min(1, (step + 1) / warmup_steps), a straight
    rise over the warm-up, times (1 + cos(pi step / total_steps)) / 2 for the cosine schedule (from 1 down to 0 over
    all the steps of --epochs, in closed form, where CosineAnnealingLR's recursion, resumed with more epochs, would run
    past its end and divide by zero)."""
    rise = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    if schedule != "cosine":
        return rise
    return rise * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)) / 2


def _check_placement(settings: TrainSettings, device: torch.device, world: int) -> None:
    """Refuse a batch smaller than the processes, and hand-made CUDA graphs anywhere but one process on CUDA."""
    if settings.batch_size < world:
        raise AekitError(f"batch size {settings.batch_size} is smaller than the {world} processes; raise --batch-size")
    if settings.cuda_graph and (device.type != "cuda" or world > 1):
        raise AekitError(
            f"--cuda-graph needs one process on a CUDA device (this run: {world} on "
            f"{device.type}); use --compile or drop it"
        )


class _Loop:
    """The state of one training run: model, optimizers, schedules, RNGs, history and the position in the epoch."""

    def __init__(
        self,
        model,
        dataset: Dataset,
        settings: TrainSettings,
        device: torch.device,
        sink: RunSink | None,
        test_each_epoch: bool,
    ):
        self.model, self.settings, self.device, self.sink = model, settings, device, sink
        self.world, self.rank = distributed.world_size(), distributed.rank()
        _check_placement(settings, device, self.world)
        self.writes = sink is not None and distributed.is_main()
        # Where the batches come from (aekit.training.batches): the splits on the device in their stored type (uint8
        # intensities are 4x smaller than float32), or streamed from the dataset's arrays; made float inside the step.
        self.placement: list[str] = []  # --data-on auto's choice and why, said when the run starts (after restore)
        self.source: BatchSource = make_source(
            dataset,
            settings.data_on,
            device,
            settings.batch_size,
            self.rank,
            self.world,
            test_each_epoch,
            self.placement.append,
            settings.patches_per_epoch,
        )
        self.phases = model.phases()
        self.steps_per_epoch = self.source.steps_per_epoch
        self.total_steps = settings.epochs * self.steps_per_epoch
        self._make_optimizers()
        self.data_order = torch.Generator().manual_seed(settings.seed)
        self.history: list[dict] = []
        self.position: dict | None = None  # where a stopped epoch resumes: step, order, running sums, time spent
        self.tally = _Tally(device)
        self.train_step = self._make_train_step()

    def _make_optimizers(self) -> None:
        """One Adam per phase (and its learning-rate schedule, for cosine or a warm-up)."""
        settings, device = self.settings, self.device
        # Fused Adam on CUDA: one kernel updates every parameter, where the default launches several per step.
        # torch.compile generates its own fused kernels from the default one, so it keeps that. A step replayed as a
        # CUDA graph (by hand, or by torch.compile on CUDA) needs Adam's step counts and learning rate on the device.
        self.adam_flags = {
            "fused": device.type == "cuda" and not settings.compile,
            "capturable": settings.cuda_graph or (settings.compile and device.type == "cuda"),
        }
        self.optimizers = [
            torch.optim.Adam(phase.parameters, lr=settings.lr, **self.adam_flags) for phase in self.phases
        ]
        self._tensor_learning_rates()
        self.schedulers = [
            torch.optim.lr_scheduler.LambdaLR(opt, self._lr_factor)
            if settings.schedule == "cosine" or settings.warmup_steps
            else None
            for opt in self.optimizers
        ]

    def _make_train_step(self):
        """The function of one training step on a batch's indices (or the batch itself), captured as a CUDA graph
        with --cuda-graph."""
        settings = self.settings
        step = _step_function(self.phases, self.optimizers, settings, self.device, self.world)
        x_train = self.source.x_train  # on the device: the step gathers its batch; None: it is given the batch

        def train_step(inputs: torch.Tensor) -> bool:
            """One step on the examples at the indices ``inputs`` (or on the batch ``inputs``), tallied; False where
            on_nan="skip" dropped its update."""
            parts = step(float_batch(inputs if x_train is None else x_train[inputs]))
            if parts is None:
                return False
            self.tally.add(parts)
            return True

        # By hand, the gathering of the batch (on the device) and the tally are captured with the step: one launch.
        # A compiled step compiles again once Adam's state exists (its second call); capture must follow the last.
        if settings.cuda_graph:
            return GraphedStep(train_step, self.optimizers, warmup=5 if settings.compile else 3)
        return train_step

    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "schedulers": [s.state_dict() if s is not None else {} for s in self.schedulers],
            "rng": _rng_state(self.data_order),
            "history": self.history,
            "position": self.position,
        }

    def restore(self) -> None:
        if self.sink is None:
            raise AekitError("resuming needs the run folder (out) that holds the checkpoint")
        state = self.sink.restore()
        try:
            self.model.load_state_dict(state["model"])
            for opt, opt_state in zip(self.optimizers, state["optimizers"], strict=True):
                # The run may go on with another way of running its step, or on another device, than it was saved
                # with: this run's Adam flags decide where the loaded step counts go and how the update runs.
                for group in opt_state["param_groups"]:
                    group.update(self.adam_flags)
                opt.load_state_dict(opt_state)
            for opt, scheduler, sched_state in zip(self.optimizers, self.schedulers, state["schedulers"], strict=True):
                if scheduler is not None:
                    # The schedule is a function of the step count alone: the rate is this run's (whose --epochs a
                    # resume may have raised), not the saved one's; checkpoints of CosineAnnealingLR load alike.
                    scheduler.last_epoch = int(sched_state["last_epoch"])
                    for group in opt.param_groups:
                        group["lr"] = self.settings.lr * self._lr_factor(scheduler.last_epoch)
            self._tensor_learning_rates()
            _set_rng_state(state["rng"], self.data_order)
            self.history = list(state["history"])
            self.position = state.get("position")
        except (KeyError, RuntimeError, ValueError, TypeError) as error:
            raise self._not_ours(repr(error)) from None
        problem = self.source.position_problem(self.position) if self.position is not None else None
        if problem is not None:
            raise self._not_ours(problem)
        if self.writes and self.history:
            # A run that failed after its checkpoint may lack the weights and history of that epoch (save hands the
            # checkpoint first); a stopped epoch's weights are not in it, but those of the epoch before it are kept.
            self.sink.epochs(self.history, self.model if self.position is None else None)

    def _not_ours(self, reason: str) -> AekitError:
        """The refusal of a checkpoint saved by another model or settings, for ``reason``."""
        return AekitError(
            f"{self.sink.last_checkpoint()} does not belong to this model and settings ({reason}); "
            "train again without --resume"
        )

    def _stopped(self, signal_number: int, after: str) -> TrainingStopped:
        """The stop by ``signal_number`` ``after`` a step or an epoch (checkpointed), and how to continue."""
        where = f"; continue with --resume from {self.sink.name}" if self.sink is not None else ""
        return TrainingStopped(f"stopped by {signal.Signals(signal_number).name} after {after}{where}", signal_number)

    def _lr_factor(self, step: int) -> float:
        """The factor of --lr after ``step`` steps of this run (:func:`learning_rate_factor`)."""
        settings = self.settings
        return learning_rate_factor(step, self.total_steps, settings.schedule, settings.warmup_steps)

    def _tensor_learning_rates(self) -> None:
        """A captured step reads the learning rate from a tensor on the device that the schedule updates in place,
        so it follows the schedule without recompiling (torch.compile) or recapturing (a CUDA graph); an eager step
        takes a number (a checkpoint of a captured run holds a tensor)."""
        captured = self.settings.compile or self.settings.cuda_graph
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = (
                    torch.as_tensor(group["lr"], dtype=torch.float32, device=self.device).clone()
                    if captured
                    else float(group["lr"])
                )

    def save(self, epoch_done: bool) -> None:
        """Hand the sink the checkpoint (always) and then, after a whole epoch, the history and model; rank 0 only.
        The checkpoint comes first: a write that fails after it leaves what ``restore`` hands over again."""
        if not self.writes:
            return
        self.sink.checkpoint(self.state())
        if epoch_done:
            self.sink.epochs(self.history, self.model)

    def run(self, progress: bool, on_epoch_end: Callable[[dict], None] | None) -> list[dict]:
        settings, world = self.settings, self.world
        self.model.train()
        if progress and distributed.is_main():
            for line in self.placement:
                print(line, file=sys.stderr)
        done_steps = len(self.history) * self.steps_per_epoch + (self.position["step"] if self.position else 0)
        # disable=None hides the bar where stderr is not a terminal; the per-epoch lines are printed regardless.
        bar = tqdm(
            total=max(settings.epochs * self.steps_per_epoch - done_steps, 0),
            unit="step",
            disable=None if progress and distributed.is_main() else True,
            dynamic_ncols=True,
            leave=False,
        )
        if progress and world > 1 and distributed.is_main():
            bar.write(
                f"{world} processes, {settings.batch_size // world} examples each: effective batch size "
                f"{settings.batch_size}"
            )
        try:
            with _StopRequest() as stop:
                for epoch in range(len(self.history) + 1, settings.epochs + 1):
                    bar.set_description(f"epoch {epoch}/{settings.epochs}")
                    if world > 1 and self.position is None:
                        # Same weights and data order on every rank (same seed), but each rank its own noise and
                        # dropout, reseeded per epoch so that a job restarted from an epoch's checkpoint draws the
                        # same noise as one never interrupted (one process restores its full RNG state instead).
                        torch.manual_seed(settings.seed + 7919 * self.rank + 104729 * (epoch - 1))
                    record = self._epoch(epoch, bar, stop)
                    if (
                        progress
                        and distributed.is_main()
                        and (epoch % max(1, settings.epochs // 10) == 0 or epoch == settings.epochs)
                    ):
                        test = f", test loss {record['test_loss']:.4f}" if "test_loss" in record else ""
                        bar.write(f"epoch {epoch}/{settings.epochs}: train loss {record['train_loss']:.4f}{test}")
                    if on_epoch_end is not None:
                        on_epoch_end(record)
                    if stop.signal_number is not None:
                        # The last epoch too: what follows (evaluation, figures) waits for --resume.
                        raise self._stopped(stop.signal_number, f"epoch {epoch} of {settings.epochs}")
        finally:
            bar.close()
        self.model.eval()
        return self.history

    def _epoch(self, epoch: int, bar, stop: _StopRequest) -> dict:
        settings, source = self.settings, self.source
        started = time.perf_counter()
        if self.position is None:
            order = source.order(self.data_order)
            first_step, saved_sums, skipped, spent = 0, {}, 0, 0.0
        else:
            position = self.position
            order, first_step, spent = position["order"], position["step"], position["seconds"]
            saved_sums, skipped = position["sums"], position["skipped"]
        self.tally.start(first_step, saved_sums)
        sums = self.tally.sums
        # The source's batches in the epoch's order from first_step on: indices (device) or batches (stream).
        with contextlib.closing(source.batches(order, first_step)) as batches:
            for step, inputs in enumerate(batches, start=first_step):
                if not self.train_step(inputs):
                    skipped += 1
                for scheduler in self.schedulers:
                    if scheduler is not None:
                        scheduler.step()
                if (step + 1) % settings.log_every == 0 or step + 1 == self.steps_per_epoch:
                    _check_finite(self.tally.first_bad, epoch, self.sink)
                    if "loss" in sums:
                        bar.set_postfix(loss=f"{sums['loss'].item() / (step + 1 - skipped):.4g}")
                bar.update(1)
                if stop.signal_number is not None and step + 1 < self.steps_per_epoch:
                    _check_finite(self.tally.first_bad, epoch, self.sink)
                    self.position = {
                        "step": step + 1,
                        "order": order,
                        "skipped": skipped,
                        "sums": {k: v.detach().cpu() for k, v in sums.items()},
                        "seconds": spent + time.perf_counter() - started,
                    }
                    self.save(epoch_done=False)
                    raise self._stopped(stop.signal_number, f"step {step + 1} of epoch {epoch}")
        self.position = None
        applied = self.steps_per_epoch - skipped
        record = {"epoch": epoch, **{f"train_{k}": (v / max(applied, 1)).item() for k, v in sums.items()}}
        if settings.on_nan == "skip":
            record["skipped_steps"] = skipped
        if source.x_test is not None:
            record.update({f"test_{k}": v for k, v in mean_loss(self.model, source.x_test).items()})
            if not math.isfinite(record["test_loss"]):
                raise TrainingDiverged(
                    f"the test loss became {record['test_loss']} after epoch {epoch}; "
                    f"{_last_good(self.sink)}; lower {named('lr')} or check the data"
                )
        record["seconds"] = spent + time.perf_counter() - started
        self.history.append(record)
        self.save(epoch_done=True)
        return record


def train(
    model: torch.nn.Module,
    dataset: Dataset,
    settings: TrainSettings = TrainSettings(),
    *,
    out: str | Path | RunSink | None = None,
    device: str | torch.device = "auto",
    resume: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[dict], None] | None = None,
    test_each_epoch: bool = True,
) -> list[dict]:
    """Train ``model`` on ``dataset`` and return the per-epoch history (also kept in ``out`` if given).

    Seed torch before building the model for reproducible initial weights; the loop seeds its data order from
    ``settings.seed``. ``out`` is where the run is kept: a :class:`RunSink`, or the path of an existing run folder,
    where each epoch's checkpoint.pt, model.safetensors and history.csv are written
    (:class:`aekit.training.run_folder.RunFolder`; rank 0 only, under torchrun). ``test_each_epoch=False`` skips the
    per-epoch test loss (for callers with no held-out data).
    """
    device = resolve_device(device) if isinstance(device, str) else device
    sink = run_folder.RunFolder(out) if isinstance(out, (str, Path)) else out
    model.to(device)
    standardize = getattr(model, "standardize", None)  # aekit's models have one; a model of the caller's may not
    if standardize is not None and not resume:
        standardize.fit(dataset.x_train)  # per-feature statistics of the training split (nothing when disabled)
    if getattr(model, "closed_form", False):
        return _fit_closed_form(model, dataset, sink if distributed.is_main() else None)
    loop = _Loop(model, dataset, settings, device, sink, test_each_epoch)
    if resume:
        loop.restore()
    # Dynamo keeps counting the compiled optimizer steps of earlier trainings (whose optimizers are gone) against its
    # recompile limit of 8: without lifting it, the 9th compiled training of a process would step uncompiled.
    try:
        with torch._dynamo.utils.disable_cache_limit() if settings.compile else contextlib.nullcontext():
            return loop.run(progress, on_epoch_end)
    except TrainingDiverged as error:
        raise TrainingDiverged(f"{error}{_likely_cause(model, dataset)}") from None


def _likely_cause(model: torch.nn.Module, dataset: Dataset) -> str:
    """What most likely made the loss diverge, where the data say: real values of very different or very large
    scales fed to a model that does not standardize them."""
    standardize = getattr(model, "standardize", None)
    if dataset.binary or standardize is None or standardize.enabled:
        return ""
    low, high = dataset.value_range
    if max(abs(low), abs(high)) < 1e3:
        return ""
    return (
        f" (likely cause: the data span [{low:.3g}, {high:.3g}] and the model does not standardize them; drop "
        f"{named('standardize', False)}, or rescale the data)"
    )


def _step_function(phases: list[Phase], optimizers, settings: TrainSettings, device: torch.device, world: int):
    """One training step on a batch: every phase's forward, backward and optimizer step. Returns the detached loss
    parts (and "loss", the first phase's total) without synchronising with the device; with on_nan="skip" it checks
    each phase's loss first and returns None when an update was skipped."""
    # Autocast's cache of cast weights would be stale on a graph's replays.
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=settings.precision == "bf16", cache_enabled=not settings.cuda_graph
    )
    skip_non_finite = settings.on_nan == "skip"

    def step(batch: torch.Tensor) -> dict[str, torch.Tensor] | None:
        parts: dict[str, torch.Tensor] = {}
        skipped = False
        for i, (phase, opt) in enumerate(zip(phases, optimizers)):
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = phase.loss(batch)
            if skip_non_finite and not _finite_everywhere(loss.total, world):
                skipped = True
                continue
            loss.total.backward()
            if world > 1:
                distributed.average_gradients(phase.parameters)
            if settings.clip_grad_norm:
                torch.nn.utils.clip_grad_norm_(phase.parameters, settings.clip_grad_norm)
            opt.step()
            parts.update({name: value.detach().float() for name, value in loss.parts.items()})
            if i == 0:
                parts["loss"] = loss.total.detach().float()
        return None if skipped else parts

    if not settings.compile:
        return step
    # dynamic=False: the ragged last batch gets its own static-shape graph instead of symbolic shapes everywhere.
    # On CUDA torch.compile replays its kernels as CUDA graphs itself, unless they are captured by hand (the trainer).
    return torch.compile(
        step, mode="reduce-overhead" if device.type == "cuda" and not settings.cuda_graph else None, dynamic=False
    )


def _finite_everywhere(loss: torch.Tensor, world: int) -> bool:
    """Whether the loss is finite on every rank (so all ranks skip the same steps and stay in step)."""
    finite = torch.isfinite(loss.detach()).to(torch.int32)
    if world > 1:
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    return bool(finite.item())


def _check_finite(first_bad_step: torch.Tensor, epoch: int, sink: RunSink | None) -> None:
    step = int(first_bad_step.item())
    if step >= 0:
        raise TrainingDiverged(
            f"the training loss became NaN or infinite at step {step} of epoch {epoch}; "
            f"{_last_good(sink)}; lower {named('lr')} or check the data"
            + (f", or pass {skip}" if (skip := named("on_nan", "skip")) else "")
        )


def _last_good(sink: RunSink | None) -> str:
    kept = sink.last_checkpoint() if sink is not None else None
    if kept is not None:
        return f"the last good checkpoint {kept} was kept"
    return "no epoch had finished, so there is no checkpoint"


def _fit_closed_form(model, dataset: Dataset, sink: RunSink | None) -> list[dict]:
    started = time.perf_counter()
    model.fit(dataset.x_train)
    # The splits go to the device a block at a time (mean_loss takes arrays), never whole.
    record = {
        "epoch": 1,
        **{f"train_{k}": v for k, v in mean_loss(model, dataset.x_train).items()},
        **{f"test_{k}": v for k, v in mean_loss(model, dataset.x_test).items()},
        "seconds": time.perf_counter() - started,
    }
    if sink is not None:
        sink.epochs([record], model)
    model.eval()
    return [record]
