"""Figures and tables: what a run or a comparison looks like."""
from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from aekit.runs import atomic_write  # noqa: E402


def _as_picture(example: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An example as something imshow draws: (H, W) grayscale, (H, W, 3) colour, or a (1, D) strip for vectors."""
    if example.ndim == 3:
        picture = np.clip(np.moveaxis(example, 0, -1), 0, 1)
        return (picture[..., 0], "gray") if picture.shape[-1] == 1 else (picture, None)
    return example.reshape(1, -1), "viridis"


def save_rows(path: Path, rows: dict[str, np.ndarray], title: str) -> None:
    """One labelled row per entry of ``rows`` (e.g. originals, then each model's reconstructions of them)."""
    n = max(len(v) for v in rows.values())
    is_image = next(iter(rows.values())).ndim == 4
    fig, axes = plt.subplots(len(rows), n, figsize=(0.9 * n + 1.2, 1.0 * len(rows) + 0.6 if is_image else
                                                     0.5 * len(rows) + 0.6), squeeze=False)
    vmin, vmax = (0, 1) if is_image else (min(v.min() for v in rows.values()), max(v.max() for v in rows.values()))
    for r, (label, examples) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(examples):
                picture, cmap = _as_picture(examples[c])
                ax.imshow(picture, cmap=cmap, vmin=vmin, vmax=vmax, aspect="equal" if is_image else "auto")
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def save_grid(path: Path, examples: np.ndarray, title: str) -> None:
    """Examples in a square grid, e.g. decoded samples from the prior."""
    side = math.ceil(math.sqrt(len(examples)))
    fig, axes = plt.subplots(side, side, figsize=(0.8 * side + 0.4, 0.8 * side + 0.6), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i < len(examples):
            picture, cmap = _as_picture(examples[i])
            ax.imshow(picture, cmap=cmap, vmin=0 if cmap == "gray" else None, vmax=1 if cmap == "gray" else None,
                      aspect="equal" if examples.ndim == 4 else "auto")
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def markdown_table(rows: list[dict], columns: list[str], formats: dict[str, str] | None = None) -> str:
    """A Markdown table; missing values show as a dash."""
    formats = formats or {}
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    for row in rows:
        cells = []
        for col in columns:
            value = row.get(col)
            cells.append("-" if value is None else format(value, formats.get(col, "")) if not isinstance(value, str)
                         else value)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _save(fig, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
