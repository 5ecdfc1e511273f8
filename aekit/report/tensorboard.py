"""Optional TensorBoard logging (``aekit train --tensorboard``; needs ``pip install aekit[tb]``).

``tensorboard --logdir RUN/tensorboard`` then shows the losses of every epoch (Scalars), image grids of every epoch
(Images) and the test codes with their labels and thumbnails (Projector). The embedding is written as the projector
files of :mod:`aekit.report.projector` at the top of the folder, where TensorBoard's projector plugin looks for them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from aekit.errors import AekitError
from aekit.report.plots import tile
from aekit.report.projector import write_projector

# Image grids are enlarged (nearest neighbour) to at least this many pixels a cell: 8x8 digits are unreadable as is.
_MIN_CELL = 32


class TensorBoardLog:
    """Event files and projector files in ``folder``. The writer is made on first use, so constructing a log checks
    that TensorBoard is installed without writing anything."""

    def __init__(self, folder: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise AekitError(
                "--tensorboard needs the tensorboard package, which is not installed; "
                "run `pip install aekit[tb]` or leave out --tensorboard"
            ) from None
        self.folder = Path(folder)
        self._writer_class = SummaryWriter
        self._writer = None

    @property
    def writer(self):
        if self._writer is None:
            self._writer = self._writer_class(log_dir=str(self.folder))
        return self._writer

    def log_epoch(self, record: dict, grids: dict[str, tuple[np.ndarray, int]]) -> None:
        """The numbers of one epoch's record as scalars (``train_loss`` becomes ``loss/train``, so each quantity's
        train and test curves sit together), and each grid of ``grids`` (tag -> (images, images per row))."""
        step = record["epoch"]
        for key, value in record.items():
            split, _, name = key.partition("_")
            if key != "epoch":
                self.writer.add_scalar(f"{name}/{split}" if split in ("train", "test") else f"time/{key}", value, step)
        for tag, (images, columns) in grids.items():
            grid = tile(images, columns, gap=1, fill=0.5)  # mid-gray lines between the images
            factor = math.ceil(_MIN_CELL / max(images.shape[2:]))
            grid = grid.repeat(factor, axis=0).repeat(factor, axis=1)
            self.writer.add_image(
                tag, np.repeat(grid, 3, axis=2) if grid.shape[2] == 1 else grid, step, dataformats="HWC"
            )
        self.writer.flush()

    def log_embedding(self, codes: np.ndarray, labels: np.ndarray | None, images: np.ndarray | None) -> None:
        """The codes for the Projector tab, with labels and image thumbnails where there are any."""
        write_projector(self.folder, codes, labels, images, name="test_codes")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
