"""One training loop for every model.

The whole dataset lives on the training device as one tensor; an epoch is a seeded permutation cut into index
batches. Each batch runs the model's phases in turn (one for most models; reconstruction, discriminator and
generator for the adversarial auto-encoder), each with its own Adam. Losses accumulate on the device and are read
once per logging interval, so the loop never waits on the device in between. After each epoch the test loss is
measured and the checkpoint written atomically; ``resume=True`` continues from it with the same result as a run
that was never interrupted (the RNG states and the data order are part of the checkpoint).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from aekit import distributed, runs
from aekit.data import Dataset
from aekit.errors import AekitError, TrainingDiverged
from aekit.models import Phase

SCHEDULES = ("constant", "cosine")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainSettings:
    """``batch_size`` is the global batch: under torchrun each of N ranks takes batch_size / N of it.
    ``compile`` runs each training step through torch.compile (on CUDA in "reduce-overhead" mode, i.e. CUDA graphs);
    ``precision="bf16"`` computes the losses under bfloat16 autocast (weights and optimizer stay float32)."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    schedule: str = "constant"
    log_every: int = 50
    compile: bool = False
    precision: str = "fp32"

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.log_every < 1:
            raise AekitError("epochs, batch size and logging interval must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise AekitError(f"learning rate {self.lr} must be a positive number, e.g. 1e-3")
        if self.schedule not in SCHEDULES:
            raise AekitError(f"unknown schedule {self.schedule!r}; use constant or cosine")
        if self.precision not in PRECISIONS:
            raise AekitError(f"unknown precision {self.precision!r}; use fp32 or bf16")

    def to_dict(self) -> dict:
        return asdict(self)


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
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AekitError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise AekitError("--device mps was asked for but MPS is not available; use --device cpu or auto")
    return device


@torch.no_grad()
def mean_loss(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1024, seed: int = 0) -> dict[str, float]:
    """The model's loss and its parts averaged over ``x`` in evaluation mode.

    Randomness inside the loss (the VAE's sample) comes from a fixed seed on a forked RNG, so the figure is
    reproducible and training's own random stream is left untouched.
    """
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size]
            loss = model.loss(batch)
            for name, value in {"loss": loss.total, **loss.parts}.items():
                sums[name] = sums.get(name, 0) + value * len(batch)
    model.train(was_training)
    return {name: (total / len(x)).item() for name, total in sums.items()}


def _rng_state(generator: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "data_order": generator.get_state(),
             "numpy": torch.from_numpy(np.frombuffer(np.random.get_state()[1].tobytes(), dtype=np.uint8).copy())}
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


def train(model: torch.nn.Module, dataset: Dataset, settings: TrainSettings = TrainSettings(), *,
          out: str | Path | None = None, device: str | torch.device = "auto", resume: bool = False,
          progress: bool = True, on_epoch_end: Callable[[dict], None] | None = None,
          test_each_epoch: bool = True) -> list[dict]:
    """Train ``model`` on ``dataset`` and return the per-epoch history (also written to ``out`` if given).

    Seed torch before building the model for reproducible initial weights; the loop seeds its data order from
    ``settings.seed``. With ``out``, each epoch writes model.safetensors, checkpoint.pt and history.csv there (rank 0
    only, under torchrun). ``test_each_epoch=False`` skips the per-epoch test loss (for callers with no held-out data).
    """
    device = resolve_device(device) if isinstance(device, str) else device
    out = Path(out) if out is not None else None
    writes = out is not None and distributed.is_main()
    model.to(device)
    if getattr(model, "closed_form", False):
        return _fit_closed_form(model, dataset, out if writes else None, device)

    world, rank = distributed.world_size(), distributed.rank()
    if settings.batch_size < world:
        raise AekitError(f"batch size {settings.batch_size} is smaller than the {world} processes; raise --batch-size")
    x_train = torch.from_numpy(dataset.x_train).to(device)
    x_test = torch.from_numpy(dataset.x_test).to(device) if test_each_epoch else None
    phases = model.phases()
    # A tensor learning rate lets a compiled step follow the schedule without recompiling.
    lr = torch.tensor(settings.lr) if settings.compile else settings.lr
    optimizers = [torch.optim.Adam(phase.parameters, lr=lr) for phase in phases]
    steps_per_epoch = math.ceil(len(x_train) / settings.batch_size)
    if world > 1 and len(x_train) % settings.batch_size and len(x_train) % settings.batch_size < world:
        steps_per_epoch -= 1  # a last batch too small to give every rank an example is dropped
    schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings.epochs * steps_per_epoch)
                  if settings.schedule == "cosine" else None for opt in optimizers]
    data_order = torch.Generator().manual_seed(settings.seed)
    history: list[dict] = []
    if resume:
        history = _restore(out, model, optimizers, schedulers, data_order)
    if world > 1:
        # Same weights and data order on every rank (same seed), but each rank its own noise and dropout.
        torch.manual_seed(settings.seed + 7919 * rank + 104729 * len(history))
    step_fn = _step_function(phases, optimizers, settings, device, world)

    model.train()
    first_epoch = len(history) + 1
    total_steps = (settings.epochs - len(history)) * steps_per_epoch
    # disable=None hides the bar where stderr is not a terminal; the per-epoch lines are printed regardless.
    bar = tqdm(total=max(total_steps, 0), disable=None if progress and distributed.is_main() else True,
               unit="step", dynamic_ncols=True, leave=False)
    if progress and world > 1 and distributed.is_main():
        bar.write(f"{world} processes, {settings.batch_size // world} examples each: effective batch size "
                  f"{settings.batch_size}")
    try:
        for epoch in range(first_epoch, settings.epochs + 1):
            started = time.perf_counter()
            bar.set_description(f"epoch {epoch}/{settings.epochs}")
            sums: dict[str, torch.Tensor] = {}
            first_bad_step = torch.tensor(-1, device=device)
            order = torch.randperm(len(x_train), generator=data_order).to(device)
            for step in range(steps_per_epoch):
                batch = x_train[order[step * settings.batch_size:(step + 1) * settings.batch_size][rank::world]]
                parts = step_fn(batch)
                for scheduler in schedulers:
                    if scheduler is not None:
                        scheduler.step()
                for name, value in parts.items():
                    sums[name] = sums.get(name, 0) + value
                first_bad_step = torch.where(~torch.isfinite(parts["loss"]) & (first_bad_step < 0), step + 1,
                                             first_bad_step)
                if (step + 1) % settings.log_every == 0 or step + 1 == steps_per_epoch:
                    _check_finite(first_bad_step, epoch, out)
                    bar.set_postfix(loss=f"{sums['loss'].item() / (step + 1):.4g}")
                bar.update(1)
            record = {"epoch": epoch}
            record.update({f"train_{k}": (v / steps_per_epoch).item() for k, v in sums.items()})
            if test_each_epoch:
                record.update({f"test_{k}": v for k, v in mean_loss(model, x_test).items()})
            if not math.isfinite(record.get("test_loss", 0.0)):
                raise TrainingDiverged(f"the test loss became {record['test_loss']} after epoch {epoch}; "
                                       f"{_last_good(out)}; lower --lr or check the data")
            record["seconds"] = time.perf_counter() - started
            history.append(record)
            if writes:
                runs.save_weights(model, out / runs.WEIGHTS)
                runs.write_csv(out / runs.HISTORY, history)
                runs.save_checkpoint(out / runs.CHECKPOINT, {
                    "model": model.state_dict(), "optimizers": [opt.state_dict() for opt in optimizers],
                    "schedulers": [s.state_dict() if s is not None else {} for s in schedulers],
                    "rng": _rng_state(data_order), "history": history})
            # About ten summary lines a run, whatever its length.
            if progress and distributed.is_main() and (epoch % max(1, settings.epochs // 10) == 0
                                                       or epoch == settings.epochs):
                test = f", test loss {record['test_loss']:.4f}" if test_each_epoch else ""
                bar.write(f"epoch {epoch}/{settings.epochs}: train loss {record['train_loss']:.4f}{test}")
            if on_epoch_end is not None:
                on_epoch_end(record)
    finally:
        bar.close()
    model.eval()
    return history


def _step_function(phases: list[Phase], optimizers, settings: TrainSettings, device: torch.device, world: int):
    """One training step on a batch: every phase's forward, backward and optimizer step; returns the detached loss
    parts (and "loss", the first phase's total) without synchronising with the device."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.precision == "bf16")

    def step(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        parts: dict[str, torch.Tensor] = {}
        for i, (phase, opt) in enumerate(zip(phases, optimizers)):
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = phase.loss(batch)
            loss.total.backward()
            if world > 1:
                distributed.average_gradients(phase.parameters)
            opt.step()
            parts.update({name: value.detach().float() for name, value in loss.parts.items()})
            if i == 0:
                parts["loss"] = loss.total.detach().float()
        return parts

    if not settings.compile:
        return step
    # dynamic=False: the ragged last batch gets its own static-shape graph instead of symbolic shapes everywhere.
    return torch.compile(step, mode="reduce-overhead" if device.type == "cuda" else None, dynamic=False)


def _restore(out: Path | None, model, optimizers, schedulers, data_order: torch.Generator) -> list[dict]:
    """Load the checkpoint in ``out`` into the model, optimizers, schedulers and RNGs; returns the history so far."""
    if out is None:
        raise AekitError("resuming needs the run folder (out) that holds the checkpoint")
    state = runs.load_checkpoint(out / runs.CHECKPOINT)
    try:
        model.load_state_dict(state["model"])
        for opt, opt_state in zip(optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(opt_state)
        for scheduler, sched_state in zip(schedulers, state["schedulers"], strict=True):
            if scheduler is not None:
                scheduler.load_state_dict(sched_state)
        _set_rng_state(state["rng"], data_order)
        return list(state["history"])
    except (KeyError, RuntimeError, ValueError, TypeError) as error:
        raise AekitError(f"{out / runs.CHECKPOINT} does not belong to this model and settings ({error}); "
                         "train again without --resume") from None


def _check_finite(first_bad_step: torch.Tensor, epoch: int, out: Path | None) -> None:
    step = int(first_bad_step.item())
    if step >= 0:
        raise TrainingDiverged(f"the training loss became NaN or infinite at step {step} of epoch {epoch}; "
                               f"{_last_good(out)}; lower --lr or check the data")


def _last_good(out: Path | None) -> str:
    if out is not None and (out / runs.CHECKPOINT).exists():
        return f"the last good checkpoint {out / runs.CHECKPOINT} was kept"
    return "no epoch had finished, so there is no checkpoint"


def _fit_closed_form(model, dataset: Dataset, out: Path | None, device: torch.device) -> list[dict]:
    started = time.perf_counter()
    model.fit(dataset.x_train)
    x_train = torch.from_numpy(dataset.x_train).to(device)
    x_test = torch.from_numpy(dataset.x_test).to(device)
    record = {"epoch": 1, **{f"train_{k}": v for k, v in mean_loss(model, x_train).items()},
              **{f"test_{k}": v for k, v in mean_loss(model, x_test).items()},
              "seconds": time.perf_counter() - started}
    if out is not None:
        runs.save_weights(model, out / runs.WEIGHTS)
        runs.write_csv(out / runs.HISTORY, [record])
    model.eval()
    return [record]
