"""The run folder: config.json, model.safetensors, checkpoint.pt, history.csv, metrics.json, figures/.

Every file is written atomically (a temporary file in the same folder, then a rename), so a crash leaves either the
old file or the new one, never half of one. Loading never unpickles: weights come from safetensors, loop state from
``torch.load(weights_only=True)``, everything else from JSON.
"""
from __future__ import annotations

import csv
import io
import json
import os
import socket
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from aekit.errors import RunError
from aekit.models import ModelSpec, build_model

CONFIG, WEIGHTS, CHECKPOINT, HISTORY, METRICS = (
    "config.json", "model.safetensors", "checkpoint.pt", "history.csv", "metrics.json")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old content or the new, nothing in between."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, text.getvalue().encode())


def save_weights(model: torch.nn.Module, path: Path) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, save(state, metadata={"format": "pt"}))


def save_checkpoint(path: Path, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict:
    """The loop state saved by the trainer; only tensors and plain containers are accepted (no pickled code)."""
    if not path.exists():
        raise RunError(f"{path.parent}: no {CHECKPOINT} to resume from; train without --resume first")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or hostile file
        raise RunError(f"{path}: the checkpoint is corrupt or not a checkpoint ({type(error).__name__}); "
                       f"delete it and train again without --resume") from None


def read_config(run_dir: Path) -> dict:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise RunError(f"{run_dir} is not a run folder (no {CONFIG}); pass the --out folder of `aekit train`")
    config = read_json(path)
    if not isinstance(config.get("model"), dict):
        raise RunError(f"{path} has no model section; restore it or train again")
    return config


def model_spec(config: dict, run_dir: Path) -> ModelSpec:
    try:
        return ModelSpec.from_dict(config["model"])
    except (TypeError, ValueError) as error:
        raise RunError(f"{Path(run_dir) / CONFIG}: invalid model settings ({error}); "
                       "restore it or train again") from None


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild a trained model from its run folder, in evaluation mode."""
    run_dir = Path(run_dir)
    spec = model_spec(read_config(run_dir), run_dir)
    model = build_model(spec)
    weights = run_dir / WEIGHTS
    try:
        state = load_file(weights)
    except FileNotFoundError:
        raise RunError(f"{run_dir}: no {WEIGHTS}; the run did not finish an epoch, train it again") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise RunError(f"{weights} is corrupt ({error}); restore it or train again") from None
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise RunError(f"{weights} does not match the model in {CONFIG} (different layers or sizes); "
                       "restore the matching pair of files or train again") from None
    return model.to(device).eval()


def read_json(path: Path) -> dict:
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise RunError(f"{path} is missing or not valid JSON; restore it or train again") from None
    if not isinstance(value, dict):
        raise RunError(f"{path} does not hold a JSON object; restore it or train again")
    return value


LOCK = ".lock"


class RunLock:
    """Keeps a second process from writing into the same run folder: ``.lock`` holds the owner's host and pid.

    A lock whose owner is gone (same host, no such process) is stale and taken over; a live owner's lock is refused
    with a message naming it.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.owner = f"{socket.gethostname()} {os.getpid()}"

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None:
                    raise RunError(f"{self.path.parent} is in use by process {holder}; wait for it to finish or "
                                   "choose another --out") from None
                self.path.unlink(missing_ok=True)  # stale: its owner died without cleaning up
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self.owner + "\n")
            return self
        raise RunError(f"could not take the lock {self.path}; remove it if no aekit process uses that folder")

    def __exit__(self, *exc):
        if self._read() == self.owner:
            self.path.unlink(missing_ok=True)

    def _read(self) -> str | None:
        try:
            return self.path.read_text().strip()
        except OSError:
            return None

    def _holder(self) -> str | None:
        """The live owner ("host pid") of the lock, or None when the lock is stale or unreadable."""
        text = self._read()
        if not text:
            return None
        host, _, pid = text.rpartition(" ")
        if host != socket.gethostname():
            return text  # another machine's process: cannot tell whether it lives, so respect it
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            return None
        except PermissionError:
            pass  # alive, owned by another user
        return text
