"""Where the trainer's batches come from: one interface, two implementations.

An epoch is a seeded permutation of the training examples cut into global batches, and under torchrun each rank
takes ``order[step * B:(step + 1) * B][rank::world]`` of every batch. Both sources cut the same order the same way,
so a run gives the same weights whichever it uses, and a run stopped inside an epoch (its position: the order and
the step) may resume with either.

- :class:`DeviceSource` (``--data-on device``, the fast path): both splits copied to the training device once, in
  their stored type (uint8 intensities stay uint8, 4x smaller than float32). The step receives the batch's indices
  and gathers the batch itself, so a step captured as a CUDA graph holds the gathering too.
- :class:`StreamSource` (``--data-on stream``, data of any size): the training split stays where the dataset keeps
  it (a memory map, for a store). A background thread gathers each batch's rows of this rank, read in increasing
  index order for locality and put back in batch order, a few batches ahead (a bounded queue). On CUDA it gathers into
  pinned host memory and the batch is copied to the device on a side stream while the previous step runs. The step
  receives the batch itself. The test loss goes over the test split a chunk at a time.

``--data-on auto`` (:func:`choose`) takes the device when both splits fit in half of its free memory, else streams.

- :class:`PatchSource` (``--patch P``, a dataset of ``photos``): streamed as above, each batch cropped by the thread.
  An epoch's order is a seeded draw of ``--patches-per-epoch`` crops, each a row (photo, top, left, transform; see
  :func:`aekit.data.photos.crop`): a position uniform over every P x P crop of every training photo (a photo drawn by
  its number of crops), and one of the 8 flips and quarter turns. The draw is the order: a stopped epoch resumes with
  the same crops. The test split is the dataset's fixed crops.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Callable, Iterator

import numpy as np
import torch

from aekit.data import Dataset
from aekit.data.photos import TRANSFORMS, crop
from aekit.models.base import rows_tensor

# auto: the data goes on the device where both splits take at most this share of its free memory.
SHARE = 0.5
# stream: batches gathered ahead of the step.
PREFETCH = 4


def on_device(x: np.ndarray, device: torch.device, rows: int = 65536) -> torch.Tensor:
    """A copy of the array ``x`` (memory-mapped or not) on ``device`` in its own type, made a block of rows at a
    time, so that no second whole copy is made on the way."""
    out = torch.empty(x.shape, dtype=torch_dtype(x.dtype), device=device)
    for start in range(0, len(x), rows):
        out[start : start + rows].copy_(rows_tensor(x[start : start + rows]))
    return out


def torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype)).dtype


def free_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` for this process: the GPU's free memory on CUDA; on the CPU (and MPS, whose memory
    is the host's) the host's available memory shared among the ranks on this machine. None where unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):  # macOS has only the second
            try:
                available = os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE")
                break
            except (ValueError, OSError, AttributeError):
                continue
    if available is None:
        return None
    return available // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


def choose(dataset: Dataset, device: torch.device, test_each_epoch: bool) -> tuple[str, str]:
    """``--data-on auto``'s choice, "device" or "stream", and why, in one line."""
    splits = [dataset.x_train, dataset.x_test] if test_each_epoch else [dataset.x_train]
    needed = sum(x.nbytes for x in splits)
    what = f"{'both splits' if test_each_epoch else 'the training split'} ({_size(needed)} as {dataset.x_train.dtype})"
    free = free_memory(device)
    where = str(device)
    if free is None:
        return "device", f"data on {where}: its free memory is unknown, so {what} go there (--data-on stream to stream)"
    if needed <= SHARE * free:
        return "device", f"data on {where}: {what} fit in half of its {_size(free)} free (--data-on auto)"
    return "stream", (
        f"data streamed to {where} a batch at a time: {what} exceed half of its {_size(free)} free (--data-on auto)"
    )


class BatchSource:
    """The training examples an epoch at a time, and the test split as :func:`aekit.training.trainer.mean_loss` takes
    it.

    ``batches(order, first_step)`` yields each step's input from ``first_step`` to the end of the epoch;
    ``x_train`` is the training split on the device where the input is a batch's indices to gather from it inside the
    step, and None where the input is the batch itself. ``x_test`` is the test split (a device tensor, or an array
    read a chunk at a time), or None where the test loss is not measured.
    """

    kind: str
    x_train: torch.Tensor | None
    x_test: torch.Tensor | np.ndarray | None

    def __init__(self, n: int, batch_size: int, rank: int, world: int):
        self.n, self.batch_size, self.rank, self.world = n, batch_size, rank, world
        self.steps_per_epoch = math.ceil(n / batch_size)
        if world > 1 and n % batch_size and n % batch_size < world:
            self.steps_per_epoch -= 1  # a last batch too small to give every rank an example is dropped

    def order(self, generator: torch.Generator) -> torch.Tensor:
        """A new epoch's order of the training examples (on the CPU; part of a stopped epoch's position)."""
        return torch.randperm(self.n, generator=generator)

    def indices(self, order: torch.Tensor, step: int) -> torch.Tensor:
        """This rank's share of the examples of ``step`` in ``order``."""
        return order[step * self.batch_size : (step + 1) * self.batch_size][self.rank :: self.world]

    def position_problem(self, position: dict) -> str | None:
        """What makes a stopped epoch's saved position impossible for this data and batch size, or None."""
        order, step, skipped = position["order"], position["step"], position["skipped"]
        problem = self.order_problem(order)
        if problem is not None:
            return problem
        if not 0 < step < self.steps_per_epoch or not 0 <= skipped <= step:
            return f"it stopped at step {step} with {skipped} skipped, outside an epoch of {self.steps_per_epoch}"
        return None

    def order_problem(self, order: torch.Tensor) -> str | None:
        """What makes ``order`` not an order of this source's epoch, or None."""
        if len(order) != self.n or not torch.equal(order.sort().values, torch.arange(self.n)):
            return f"its data order is not a permutation of the {self.n} training examples"
        return None

    def batches(self, order: torch.Tensor, first_step: int) -> Iterator[torch.Tensor]:
        raise NotImplementedError


class DeviceSource(BatchSource):
    """Both splits on the device in their stored type; each step's input is its indices (on the device)."""

    kind = "device"

    def __init__(
        self, dataset: Dataset, device: torch.device, batch_size: int, rank: int, world: int, test_each_epoch: bool
    ):
        super().__init__(len(dataset.x_train), batch_size, rank, world)
        self.x_train = on_device(dataset.x_train, device)
        self.x_test = on_device(dataset.x_test, device) if test_each_epoch else None
        self.device = device

    def batches(self, order, first_step):
        order = order.to(self.device)
        for step in range(first_step, self.steps_per_epoch):
            yield self.indices(order, step)


class StreamSource(BatchSource):
    """The splits left where the dataset keeps them; each step's input is this rank's batch, gathered ahead by a
    thread and (on CUDA) copied from pinned memory on a side stream."""

    kind = "stream"

    def __init__(
        self,
        dataset: Dataset,
        device: torch.device,
        batch_size: int,
        rank: int,
        world: int,
        test_each_epoch: bool,
        prefetch: int = PREFETCH,
        n: int | None = None,
    ):
        super().__init__(len(dataset.x_train) if n is None else n, batch_size, rank, world)
        self.host = dataset.x_train
        self.example, self.dtype = tuple(dataset.x_train.shape[1:]), dataset.x_train.dtype
        self.x_train = None
        self.x_test = dataset.x_test if test_each_epoch else None
        self.device, self.prefetch = device, prefetch

    def fill(self, indices: np.ndarray, out: np.ndarray) -> None:
        """Put the examples ``indices`` (a batch's rows of the order) into ``out``, in that order."""
        # Rows read in increasing order (a memory map's pages in file order), put back in the batch's.
        by_index = np.argsort(indices, kind="stable")
        out[by_index] = self.host[indices[by_index]]

    def batches(self, order, first_step):
        steps = range(first_step, self.steps_per_epoch)
        pinned = self.device.type == "cuda"
        reader = _Reader(
            self,
            (self.indices(order, step).numpy() for step in steps),
            self.prefetch,
            self.device if pinned else None,
        )
        try:
            if not pinned:
                for _ in steps:
                    batch = reader.next()
                    yield batch if self.device.type == "cpu" else batch.to(self.device)
                return
            main, side = torch.cuda.current_stream(self.device), torch.cuda.Stream(self.device)

            def copy(host: torch.Tensor):
                with torch.cuda.stream(side):
                    batch = host.to(self.device, non_blocking=True)
                    ready = torch.cuda.Event()
                    ready.record(side)
                return batch, ready

            pending = copy(reader.next()) if len(steps) else None
            for i in range(len(steps)):
                batch, ready = pending
                main.wait_event(ready)
                batch.record_stream(main)  # its memory is not reused before the step that reads it is done
                yield batch
                if i + 1 < len(steps):
                    pending = copy(reader.next())  # while the step just launched runs
        finally:
            reader.close()


class PatchSource(StreamSource):
    """Random crops of the dataset's training ``photos``, ``n`` an epoch, of the size of its examples; each step's
    input is this rank's batch, cropped ahead by a thread."""

    kind = "patches"

    def __init__(
        self,
        dataset: Dataset,
        device: torch.device,
        batch_size: int,
        rank: int,
        world: int,
        test_each_epoch: bool,
        n: int,
    ):
        super().__init__(dataset, device, batch_size, rank, world, test_each_epoch, n=n)
        self.photos, self.size = dataset.photos, dataset.shape[-1]
        # Each photo's number of crop positions down and across.
        self.room = torch.tensor([[p.shape[1] - self.size + 1, p.shape[2] - self.size + 1] for p in self.photos])

    def order(self, generator):
        """``n`` crops drawn with ``generator``: rows of (photo, top, left, transform)."""
        photo = torch.multinomial(self.room.prod(1).double(), self.n, replacement=True, generator=generator)
        corner = (torch.rand(self.n, 2, generator=generator, dtype=torch.float64) * self.room[photo]).long()
        transform = torch.randint(TRANSFORMS, (self.n, 1), generator=generator)
        return torch.cat([photo[:, None], corner, transform], dim=1)

    def order_problem(self, order):
        if order.shape == (self.n, 4) and order.dtype == torch.int64:
            photo, corner, transform = order[:, 0], order[:, 1:3], order[:, 3]
            if bool(((photo >= 0) & (photo < len(self.photos))).all()):
                inside = (corner >= 0) & (corner < self.room[photo])
                if bool(inside.all()) and bool(((transform >= 0) & (transform < TRANSFORMS)).all()):
                    return None
        return f"its crops are not {self.n} crops of the {len(self.photos)} training photos"

    def fill(self, indices, out):
        for i, (photo, top, left, transform) in enumerate(indices.tolist()):
            out[i] = crop(self.photos[photo], top, left, self.size, transform)


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class _Reader:
    """A thread filling, for each index array of ``steps``, a tensor (pinned for ``device``, a CUDA device) with
    ``source``'s examples (:meth:`StreamSource.fill`), at most ``depth`` ahead of the consumer."""

    def __init__(self, source: StreamSource, steps: Iterator[np.ndarray], depth: int, device: torch.device | None):
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stopping = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(source, steps, device), name="aekit-batches", daemon=True
        )
        self.thread.start()

    def _run(self, source, steps, device) -> None:
        try:
            if device is not None and device.index is not None:  # the consumer's device (else the default one)
                torch.cuda.set_device(device)
            dtype = torch_dtype(source.dtype)
            for indices in steps:
                batch = torch.empty((len(indices), *source.example), dtype=dtype, pin_memory=device is not None)
                source.fill(indices, batch.numpy())
                if not self._put(batch):
                    return
        except BaseException as error:  # handed to the consumer, which raises it
            self._put(_Failed(error))

    def _put(self, item) -> bool:
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def next(self) -> torch.Tensor:
        item = self.queue.get()
        if isinstance(item, _Failed):
            raise item.error
        return item

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()


def make_source(
    dataset: Dataset,
    data_on: str,
    device: torch.device,
    batch_size: int,
    rank: int,
    world: int,
    test_each_epoch: bool,
    say: Callable[[str], None] | None = None,
    patches_per_epoch: int | None = None,
) -> BatchSource:
    """The batch source ``data_on`` names; for "auto" the one :func:`choose` picks, said through ``say``. A dataset
    of photos gets a :class:`PatchSource` of ``patches_per_epoch`` crops an epoch, whatever ``data_on`` says."""
    if dataset.photos is not None:
        if say is not None:
            say(
                f"{patches_per_epoch} patches of {dataset.shape[-1]}x{dataset.shape[-1]} an epoch, cropped from "
                f"{len(dataset.photos)} training photos by a background thread"
            )
        return PatchSource(dataset, device, batch_size, rank, world, test_each_epoch, patches_per_epoch)
    if data_on == "auto":
        data_on, why = choose(dataset, device, test_each_epoch)
        if say is not None:
            say(why)
    kind = {"device": DeviceSource, "stream": StreamSource}[data_on]
    return kind(dataset, device, batch_size, rank, world, test_each_epoch)
