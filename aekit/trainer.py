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

from aekit import runs
from aekit.data import Dataset
from aekit.errors import AekitError, TrainingDiverged

SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    schedule: str = "constant"
    log_every: int = 50

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.log_every < 1:
            raise AekitError("epochs, batch size and logging interval must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise AekitError(f"learning rate {self.lr} must be a positive number, e.g. 1e-3")
        if self.schedule not in SCHEDULES:
            raise AekitError(f"unknown schedule {self.schedule!r}; use constant or cosine")

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

    ``test_each_epoch=False`` skips the per-epoch test loss (for callers with no held-out data of their own).

    Seed torch before building the model for reproducible initial weights; the loop seeds its data order from
    ``settings.seed``. With ``out``, each epoch writes model.safetensors, checkpoint.pt and history.csv there.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    out = Path(out) if out is not None else None
    model.to(device)
    if getattr(model, "closed_form", False):
        return _fit_closed_form(model, dataset, out, device)

    x_train = torch.from_numpy(dataset.x_train).to(device)
    x_test = torch.from_numpy(dataset.x_test).to(device) if test_each_epoch else None
    phases = model.phases()
    optimizers = [torch.optim.Adam(phase.parameters, lr=settings.lr) for phase in phases]
    steps_per_epoch = math.ceil(len(x_train) / settings.batch_size)
    schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=settings.epochs * steps_per_epoch)
                  if settings.schedule == "cosine" else None for opt in optimizers]
    data_order = torch.Generator().manual_seed(settings.seed)
    history: list[dict] = []
    if resume:
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
            history = list(state["history"])
        except (KeyError, RuntimeError, ValueError, TypeError) as error:
            raise AekitError(f"{out / runs.CHECKPOINT} does not belong to this model and settings ({error}); "
                             "train again without --resume") from None

    model.train()
    first_epoch = len(history) + 1
    total_steps = (settings.epochs - len(history)) * steps_per_epoch
    # disable=None hides the bar where stderr is not a terminal; the per-epoch lines are printed regardless.
    bar = tqdm(total=max(total_steps, 0), disable=None if progress else True, unit="step", dynamic_ncols=True, leave=False)
    try:
        for epoch in range(first_epoch, settings.epochs + 1):
            started = time.perf_counter()
            bar.set_description(f"epoch {epoch}/{settings.epochs}")
            sums: dict[str, torch.Tensor] = {}
            first_bad_step = torch.tensor(-1, device=device)
            order = torch.randperm(len(x_train), generator=data_order).to(device)
            for step in range(steps_per_epoch):
                batch = x_train[order[step * settings.batch_size:(step + 1) * settings.batch_size]]
                for phase, opt, scheduler in zip(phases, optimizers, schedulers):
                    opt.zero_grad(set_to_none=True)
                    loss = phase.loss(batch)
                    loss.total.backward()
                    opt.step()
                    if scheduler is not None:
                        scheduler.step()
                    for name, value in loss.parts.items():
                        sums[name] = sums.get(name, 0) + value.detach()
                    if phase is phases[0]:
                        sums["loss"] = sums.get("loss", 0) + loss.total.detach()
                        bad = ~torch.isfinite(loss.total.detach())
                        first_bad_step = torch.where(bad & (first_bad_step < 0), step + 1, first_bad_step)
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
            if out is not None:
                runs.save_weights(model, out / runs.WEIGHTS)
                runs.write_csv(out / runs.HISTORY, history)
                runs.save_checkpoint(out / runs.CHECKPOINT, {
                    "model": model.state_dict(), "optimizers": [opt.state_dict() for opt in optimizers],
                    "schedulers": [s.state_dict() if s is not None else {} for s in schedulers],
                    "rng": _rng_state(data_order), "history": history})
            if progress:
                test = f", test loss {record['test_loss']:.4f}" if test_each_epoch else ""
                bar.write(f"epoch {epoch}/{settings.epochs}: train loss {record['train_loss']:.4f}{test}")
            if on_epoch_end is not None:
                on_epoch_end(record)
    finally:
        bar.close()
    model.eval()
    return history


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
