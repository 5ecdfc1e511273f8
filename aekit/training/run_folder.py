"""The run folder: config.json, model.safetensors, checkpoint.pt, history.csv, metrics.json, figures/.

The trainer's files (checkpoint, weights, history) are written by :class:`RunFolder`, the sink it hands them to;
the workflow (:mod:`aekit.jobs.workflow`) writes the rest. Every file is written atomically (a temporary file in the
same folder, then a rename), so a crash leaves either the old file or the new one, never half of one. Loading never
unpickles: weights come from safetensors, loop state from ``torch.load(weights_only=True)``, everything else from
JSON.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import os
import socket
import time
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from aekit.atomic import READ_ONLY, atomic_write, make_folder, storage_error
from aekit.errors import AekitError, RunError
from aekit.models import ModelConfig, build_model, config_from_dict
from aekit.models.config import on_meta
from aekit.naming import ANY, speaking

CONFIG, WEIGHTS, CHECKPOINT, HISTORY, METRICS = (
    "config.json",
    "model.safetensors",
    "checkpoint.pt",
    "history.csv",
    "metrics.json",
)


def write_json(path: Path, obj) -> None:
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, text.getvalue().encode())


def weights_bytes(model: torch.nn.Module) -> bytes:
    """The model's state as the bytes of a safetensors file (what model.safetensors holds)."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return save(state, metadata={"format": "pt"})


def fingerprint(model: torch.nn.Module) -> bytes:
    """16 bytes that identify a model's weights: the start of the sha256 of :func:`weights_bytes`."""
    return hashlib.sha256(weights_bytes(model)).digest()[:16]


class RunFolder:
    """The trainer's sink (:class:`aekit.training.trainer.RunSink`) in the run folder ``folder``, which must exist: the
    loop state in checkpoint.pt, the weights in model.safetensors and the finished epochs in history.csv, each written
    atomically (a write the file system refuses raises :class:`aekit.atomic.StorageError`)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.name = str(self.folder)

    def checkpoint(self, state: dict) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write(self.folder / CHECKPOINT, buffer.getvalue())

    def epochs(self, history: list[dict], model: torch.nn.Module | None) -> None:
        if model is not None:
            atomic_write(self.folder / WEIGHTS, weights_bytes(model))
        write_csv(self.folder / HISTORY, history)

    def restore(self) -> dict:
        return load_checkpoint(self.folder / CHECKPOINT)

    def last_checkpoint(self) -> str | None:
        path = self.folder / CHECKPOINT
        return str(path) if path.exists() else None


def load_checkpoint(path: Path) -> dict:
    """The loop state saved by the trainer; only tensors and plain containers are accepted (no pickled code), in
    the layout the trainer writes (see :func:`_loop_state_problem`)."""
    if not path.exists():
        raise no_checkpoint(path.parent)
    problem = _archive_problem(path)
    if problem:
        raise RunError(
            f"{path}: the checkpoint is corrupt or not a checkpoint ({problem}); delete it and train "
            "again without --resume"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or hostile file
        raise RunError(
            f"{path}: the checkpoint is corrupt or not a checkpoint ({type(error).__name__}); "
            f"delete it and train again without --resume"
        ) from None
    problem = _loop_state_problem(state)
    if problem:
        raise RunError(
            f"{path}: the checkpoint is corrupt or not a checkpoint ({problem}); delete it and train "
            "again without --resume"
        )
    return state


def no_checkpoint(run_dir: Path) -> RunError:
    """The refusal to resume a folder with no checkpoint."""
    # The trainer writes one after every epoch: a run without one stopped before its first epoch ended, and the
    # same command without --resume starts it again there (see holds_run); so does one in a fresh folder.
    return RunError(
        f"{run_dir}: no {CHECKPOINT} to resume from, so no epoch finished; delete the folder and train "
        "again without --resume"
    )


def _archive_problem(path: Path) -> str | None:
    """Why ``path`` is not the uncompressed zip that torch.save writes, or None.

    torch allocates what a zip entry claims to hold before reading it, and its older non-zip format what a pickle
    claims; so only the zip format is accepted, and only entries no larger than the file itself.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return "not the zip archive torch.save writes"
    size = path.stat().st_size
    if any(entry.compress_type != zipfile.ZIP_STORED or entry.file_size > size for entry in entries):
        return "an entry is compressed or claims more bytes than the file holds"
    return None


def _loop_state_problem(state) -> str | None:
    """What is wrong with the types of a checkpoint's loop state, or None: model weights, optimizer and schedule
    states, RNG states, one record of numbers per finished epoch, and where a stopped epoch resumes (or None)."""
    if not isinstance(state, dict) or not _LOOP_KEYS <= set(state):
        return f"not a dict with {', '.join(sorted(_LOOP_KEYS))}"
    if not isinstance(state["model"], dict) or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        return "model is not a dict of tensors"
    if not all(
        isinstance(state[k], list) and all(isinstance(v, dict) for v in state[k])
        for k in ("optimizers", "schedulers", "history")
    ):
        return "optimizers, schedulers or history is not a list of dicts"
    if not all(isinstance(v, (int, float)) for record in state["history"] for v in record.values()):
        return "history holds a record that is not all numbers"
    rng = state["rng"]
    if not isinstance(rng, dict) or not all(
        isinstance(rng.get(k), torch.Tensor) for k in ("torch", "data_order", "numpy")
    ):
        return "rng is not a dict of the torch, data_order and numpy states"
    position = state.get("position")
    if position is None:
        return None
    if not (
        isinstance(position, dict)
        and isinstance(position.get("step"), int)
        and isinstance(position.get("skipped"), int)
        and isinstance(position.get("seconds"), (int, float))
        and isinstance(position.get("order"), torch.Tensor)
        and position["order"].dtype == torch.int64
        and position["order"].dim() in (1, 2)  # a permutation, or the rows of patch crops
        and isinstance(position.get("sums"), dict)
        and all(isinstance(v, torch.Tensor) for v in position["sums"].values())
    ):
        return "position is not a step, order, skipped count, loss sums and seconds"
    return None


_LOOP_KEYS = {"model", "optimizers", "schedulers", "rng", "history"}


def read_config(run_dir: Path) -> dict:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise RunError(f"{run_dir} is not a run folder (no {CONFIG}); pass the --out folder of `aekit train`")
    config = read_json(path)
    if not isinstance(config.get("model"), dict):
        raise RunError(f"{path} has no model section; restore it or train again")
    return config


def run_config(config: dict, run_dir: Path) -> ModelConfig:
    """The model config in a run's config.json (read by :func:`read_config`); a problem names the field, e.g.
    ``model.code_dim``."""
    try:
        with speaking(_config_words):
            return config_from_dict(config["model"])
    except (TypeError, ValueError, AekitError) as error:
        raise RunError(f"{Path(run_dir) / CONFIG}: {error}; restore it or train again") from None


def _config_words(name: str, value=ANY) -> str:
    """config.json's words for a model setting (see :mod:`aekit.naming`): its field in the model section."""
    return f"model.{name}" if value is ANY else f"model.{name} {json.dumps(value)}"


def load(run_dir: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild a trained model from its run folder, in evaluation mode.

    The weights are read first and compared with the tensor shapes of the model the config describes, built on
    PyTorch's meta device (shapes, no memory). So a config claiming huge layers is refused before anything is
    allocated: the model built afterwards is no larger than the weights file.
    """
    run_dir = Path(run_dir)
    spec = run_config(read_config(run_dir), run_dir)
    weights = run_dir / WEIGHTS
    try:
        state = load_file(weights)
    except FileNotFoundError:
        raise RunError(f"{run_dir}: no {WEIGHTS}; the run did not finish an epoch, train it again") from None
    except (SafetensorError, OSError, ValueError) as error:
        raise RunError(f"{weights} is corrupt ({error}); restore it or train again") from None
    try:
        expected = {k: v.shape for k, v in on_meta(spec).state_dict().items()}
    except (TypeError, ValueError, RuntimeError, OverflowError) as error:
        raise RunError(
            f"{run_dir / CONFIG}: invalid model settings ({type(error).__name__}); restore it or train again"
        ) from None
    if expected != {k: v.shape for k, v in state.items()}:
        raise RunError(
            f"{weights} does not match the model in {CONFIG} (different layers or sizes); "
            "restore the matching pair of files or train again"
        )
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point() or v.is_complex()):
        raise RunError(f"{weights} holds NaN or infinite weights; restore it or train again")
    model = build_model(spec)
    model.load_state_dict(state)
    return model.to(device).eval()


def read_json(path: Path) -> dict:
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError):
        # ValueError: not JSON, not UTF-8, or an integer past Python's digit limit; RecursionError: nested too deep.
        raise RunError(f"{path} is missing or not valid JSON; restore it or train again") from None
    if not isinstance(value, dict):
        raise RunError(f"{path} does not hold a JSON object; restore it or train again")
    return value


LOCK = ".lock"


def holds_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a run: a checkpoint, written when the first epoch (or a stop inside it) ends, or
    the weights of a closed-form fit. A folder with no more than config.json is what a run left that failed or was
    killed before that point: nothing in it can be resumed, so the same command may start the run there again."""
    run_dir = Path(run_dir)
    return (run_dir / CHECKPOINT).is_file() or (run_dir / WEIGHTS).is_file()


class RunLock:
    """Keeps a second process from writing into a run folder: an exclusive ``flock`` on ``.lock``, taken without
    waiting; the kernel releases it when its owner exits, however it dies, so a lock is never stale.

    A folder another process holds is refused with one line naming it and, where known, the holder ("host pid",
    which the owner writes into the file for that message alone). ``create`` makes the folder where it is missing;
    without it a missing folder is not locked (there is nothing to protect), and in a folder this process cannot
    write ``writable`` becomes False: a lock file there is locked through a read-only descriptor, and where there
    is none nothing is locked, as nothing can write there.
    """

    def __init__(self, run_dir: str | Path, *, create: bool = True):
        self.path = Path(run_dir) / LOCK
        self.create = create
        self.owner = f"{socket.gethostname()} {os.getpid()}"
        self.created = False  # whether this lock made the folder
        self.writable = True
        self._fd: int | None = None

    def __enter__(self):
        folder = self.path.parent
        # A folder removed by the process that held it (a run that failed before its first epoch cleans up) leaves
        # our descriptor on a lock nobody else can see: take the lock again on the file the path now names.
        for _ in range(100):
            if self.create:
                self.created = make_folder(folder) or self.created
            elif not folder.is_dir():
                return self
            fd = self._open()
            if fd is None and self.create:
                continue  # the folder was removed between its making and the open: make it again
            if fd is None:
                return self
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = self._holder()
                raise RunError(
                    f"{folder} is in use by {f'process {holder}' if holder else 'another process'}; "
                    "wait for it to finish or choose another --out"
                ) from None
            if self._names(fd):
                self._fd = fd
                self._claim()
                return self
            os.close(fd)
        raise RunError(
            f"could not lock {self.path}: it keeps being removed; stop the other aekit processes using {folder}"
        )

    def __exit__(self, *exc):
        if self._fd is None:
            return
        # Unlinked while still held: a process that opened it meanwhile finds, once it holds it, that the path no
        # longer names it, and locks afresh. Tidying only, so a failure to unlink is no error.
        with contextlib.suppress(OSError):
            if self.writable and self._names(self._fd):
                self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def _open(self) -> int | None:
        """A descriptor on the lock file, created where missing, or None where there is nothing to lock: the folder
        is gone (without ``create``), or it cannot be written (``writable`` becomes False) and holds no lock file."""
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            return None
        except OSError as error:
            if self.create or error.errno not in READ_ONLY:
                raise storage_error(error, self.path.parent) from None
        self.writable = False
        try:
            return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None

    def _names(self, fd: int) -> bool:
        """Whether the lock path still names the file open on ``fd``."""
        try:
            here = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)

    def _claim(self) -> None:
        """Write our "host pid" for the messages of processes refused meanwhile (not where read-only). Only those
        messages read it, so a failure (a full disk) is no error: the next write of the run reports that."""
        if self.writable:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
                os.pwrite(self._fd, (self.owner + "\n").encode(), 0)

    def _holder(self) -> str | None:
        """The holder's "host pid", waited for up to half a second: a process that has just taken the lock writes it
        next (:meth:`_claim`), and under load a refused process can look in between."""
        for _ in range(50):
            holder = self._read()
            if holder:
                return holder
            time.sleep(0.01)
        return None

    def _read(self) -> str | None:
        """The holder's "host pid", as one short line, or None where unknown."""
        try:
            with open(self.path, "rb") as file:
                return " ".join(file.read(300).decode(errors="replace").split()) or None
        except OSError:
            return None
