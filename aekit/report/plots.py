"""Figures and tables: what a run or a comparison looks like."""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from aekit.atomic import atomic_write, make_folder  # noqa: E402


def save_rows(path: Path, rows: dict[str, np.ndarray], title: str, columns: list[str] | None = None) -> None:
    """One labelled row per entry of ``rows`` (e.g. originals, then each model's reconstructions of them), with
    optional ``columns`` headings over the top row."""
    _save_mosaic(path, list(rows.values()), max(len(v) for v in rows.values()), title, list(rows), columns)


def save_grid(path: Path, examples: np.ndarray, title: str) -> None:
    """Examples in a square grid, e.g. decoded samples from the prior."""
    _save_mosaic(path, [examples], math.ceil(math.sqrt(len(examples))), title)


def _save_mosaic(
    path: Path,
    groups: list[np.ndarray],
    columns: int,
    title: str,
    row_labels: list[str] | None = None,
    column_labels: list[str] | None = None,
) -> None:
    """Groups of examples drawn as one picture (one image is far faster to lay out than an axes per example), each
    group starting a new row of ``columns`` cells, with white gaps between cells. Images (n, channels, height, width)
    show their [0, 1] intensities (real-valued ones, where the first group goes outside [0, 1], on its range);
    vectors (n, features) show as strips coloured on one scale shared by all."""
    is_image = groups[0].ndim == 4
    low, high = min(g.min() for g in groups), max(g.max() for g in groups)
    if is_image:
        cmap = "gray" if groups[0].shape[1] == 1 else None
        groups = shown_as_intensities(groups)
    else:
        # Strips 4 pixels tall, so that gaps between rows stay thinner than the rows.
        groups = [np.repeat(((g - low) / ((high - low) or 1.0)).reshape(len(g), 1, 1, -1), 4, axis=2) for g in groups]
        cmap = "viridis"
    _, channels, height, width = groups[0].shape
    fill = 1.0 if channels == 3 else np.nan  # white: NaN is drawn in the colour map's "bad" colour, set to white
    cells = np.concatenate(
        [np.concatenate([g, np.full((-len(g) % columns, channels, height, width), fill)]) for g in groups]
    )
    gap = max(1, min(height, width) // 8)
    canvas = tile(cells, columns, gap=gap, fill=fill)
    n_rows = len(cells) // columns
    cell_height, cell_width = (0.9, 0.9 * width / height) if is_image else (0.4, 1.2)
    fig, ax = plt.subplots(
        figsize=(
            columns * cell_width + (1.4 if row_labels else 0.4),
            n_rows * cell_height + 0.8 + (0.2 if column_labels else 0),
        )
    )
    ax.imshow(
        canvas[..., 0] if channels == 1 else canvas,
        vmin=0,
        vmax=1,
        interpolation="nearest",
        cmap=None if cmap is None else plt.get_cmap(cmap).with_extremes(bad="white"),
        aspect="equal" if is_image else "auto",
    )
    ax.set_yticks(
        [i * (height + gap) + (height - 1) / 2 for i in range(len(row_labels or []))], row_labels or [], fontsize=9
    )
    ax.set_xticks(
        [j * (width + gap) + (width - 1) / 2 for j in range(len(column_labels or []))], column_labels or [], fontsize=8
    )
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def shown_as_intensities(groups: list[np.ndarray]) -> list[np.ndarray]:
    """Groups of images on the [0, 1] scale they are drawn on. Intensities stay as they are (a model's overshoot is
    clipped when drawn); real-valued images (the first group, the data, goes outside [0, 1]) are mapped linearly from
    the data's range, the same map for every group."""
    low, high = float(groups[0].min()), float(groups[0].max())
    if 0 <= low and high <= 1:
        return groups
    return [(g - low) / ((high - low) or 1.0) for g in groups]


def markdown_table(rows: list[dict], columns: list[str], formats: dict[str, str] | None = None) -> str:
    """A Markdown table; missing values show as a dash."""
    formats = formats or {}
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    for row in rows:
        cells = []
        for col in columns:
            value = row.get(col)
            cells.append(
                "-" if value is None else format(value, formats.get(col, "")) if not isinstance(value, str) else value
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _save(fig, path: Path) -> None:
    path = Path(path)
    make_folder(path.parent)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")  # long row labels stay inside
    plt.close(fig)
    atomic_write(path, buffer.getvalue())


def tile(examples: np.ndarray, columns: int | None = None, gap: int = 0, fill: float = 0.0) -> np.ndarray:
    """Images (n, channels, height, width), clipped to [0, 1], side by side, ``columns`` to a row (default: a square
    grid), ``gap`` pixels apart, as one (rows * (height + gap) - gap, columns * (width + gap) - gap, channels) array;
    gaps and the cells after the last example hold ``fill``."""
    n, channels, height, width = examples.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    cells = np.full((rows * columns, channels, height + gap, width + gap), fill, np.float32)
    cells[:n, :, :height, :width] = np.clip(examples, 0, 1)
    canvas = (
        cells.reshape(rows, columns, channels, height + gap, width + gap)
        .transpose(0, 3, 1, 4, 2)
        .reshape(rows * (height + gap), columns * (width + gap), channels)
    )
    return canvas[: rows * (height + gap) - gap, : columns * (width + gap) - gap]


def save_codes(path: Path, codes: np.ndarray, labels: np.ndarray | None, title: str) -> None:
    """The codes as points in a plane, coloured by label. A 2-D code is drawn as it is; a longer one by its first
    two principal components (scikit-learn's PCA; the axes give each one's share of the variance); a 1-D code
    against the label. The title gets the projection appended, so the reader knows which it is."""
    n, dim = codes.shape
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, n)
    if dim == 2:
        x, y, axes, how = codes[:, 0], codes[:, 1], ("code 1", "code 2"), "the 2-D code itself"
    elif dim > 2 and n < 2:  # one point has no principal components
        x, y, axes, how = codes[:, 0], codes[:, 1], ("code 1", "code 2"), f"the first 2 values of the {dim}-D code"
    elif dim == 1:
        x, y = codes[:, 0], (labels if labels is not None else 0) + jitter
        axes = ("code", "label (jittered)" if labels is not None else "random jitter, for legibility")
        how = "the 1-D code"
    else:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2).fit(codes)
        x, y = pca.transform(codes).T
        share = pca.explained_variance_ratio_ * 100
        axes = (
            f"principal component 1 ({share[0]:.0f}% of variance)",
            f"principal component 2 ({share[1]:.0f}% of variance)",
        )
        how = f"PCA projection of the {dim}-D code"
    # Points in a random order, so no class is drawn wholly on top of the others.
    order = np.random.default_rng(0).permutation(n)
    fig, ax = plt.subplots(figsize=(7.5, 6))
    size = max(2.0, min(20.0, 4000 / n))
    if labels is None:
        ax.scatter(x[order], y[order], s=size, alpha=0.6, color="tab:blue", linewidths=0, rasterized=True)
    else:
        classes, index = np.unique(labels, return_inverse=True)
        if len(classes) <= 20:
            palette = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
            ax.scatter(
                x[order],
                y[order],
                s=size,
                alpha=0.7,
                c=[palette(i) for i in index[order]],
                linewidths=0,
                rasterized=True,
            )
            handles = [
                Line2D([], [], marker="o", linestyle="", color=palette(i), label=str(c)) for i, c in enumerate(classes)
            ]
            ax.legend(handles=handles, title="label", fontsize=8, bbox_to_anchor=(1.01, 1), loc="upper left")
        else:
            points = ax.scatter(
                x[order], y[order], s=size, alpha=0.7, c=labels[order], cmap="viridis", linewidths=0, rasterized=True
            )
            fig.colorbar(points, ax=ax, label="label")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(f"{title}\n({how}, {n} points)", fontsize=10)
    _save(fig, path)


def save_manifold(path: Path, decoded: np.ndarray, xs: np.ndarray, ys: np.ndarray, title: str) -> None:
    """Images decoded on a grid of 2-D codes, drawn at their codes: ``decoded[i * len(xs) + j]`` is the decoding of
    (xs[j], ys[i]), with xs and ys ascending and evenly spaced; code 1 runs across, code 2 up."""
    _, channels, height, width = decoded.shape
    rows = decoded.reshape(len(ys), len(xs), channels, height, width)[::-1]  # the top row has the largest code 2
    gap = max(1, min(height, width) // 8)
    canvas = tile(rows.reshape(-1, channels, height, width), len(xs), gap=gap, fill=1.0 if channels == 3 else np.nan)
    dx, dy = (xs[-1] - xs[0]) / (len(xs) - 1), (ys[-1] - ys[0]) / (len(ys) - 1)
    # Pixel p across lies at code xs[0] + (p - width / 2) * dx / (width + gap): each cell is centred on its code.
    left, right = (xs[0] + (p - width / 2) * dx / (width + gap) for p in (0, canvas.shape[1]))
    bottom, top = (ys[0] + (p - height / 2) * dy / (height + gap) for p in (0, canvas.shape[0]))
    fig, ax = plt.subplots(figsize=(7, 7 * height * len(ys) / (width * len(xs)) + 0.6))
    ax.imshow(
        canvas[..., 0] if channels == 1 else canvas,
        cmap=plt.get_cmap("gray").with_extremes(bad="white"),
        vmin=0,
        vmax=1,
        interpolation="nearest",
        extent=(left, right, bottom, top),
        aspect=(height + gap) * dx / ((width + gap) * dy),
    )  # square pixels whatever the code ranges
    ax.set_xlabel("code 1")
    ax.set_ylabel("code 2")
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def save_curves(path: Path, history: list[dict], ylabel: str, title: str) -> None:
    """The training (solid, circles) and test (dashed, squares) loss per epoch, from records as the trainer returns
    them, ``ylabel`` naming its unit; where the loss has several parts (the VAE's reconstruction and KL, the
    adversarial terms), a second panel shows each of them, one colour a part."""
    epochs = [record["epoch"] for record in history]
    parts = list(
        dict.fromkeys(
            key.split("_", 1)[1]
            for record in history
            for key in record
            if key.startswith(("train_", "test_")) and key not in ("train_loss", "test_loss")
        )
    )
    # The parts may differ in unit (the adversarial terms are cross-entropies whatever the reconstruction loss).
    panels = [("loss", ["loss"], ylabel)] + ([("parts of the loss", parts, "per example")] if len(parts) > 1 else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    few = len(epochs) <= 30  # markers only where they do not clutter the lines
    for ax, (heading, names, unit) in zip(axes[0], panels):
        for i, name in enumerate(names):
            for split, style, marker in (("train", "-", "o"), ("test", "--", "s")):
                values = [record.get(f"{split}_{name}") for record in history]
                if any(v is not None for v in values):
                    ax.plot(
                        epochs,
                        [np.nan if v is None else v for v in values],
                        style,
                        color=f"C{i}",
                        marker=marker if few else None,
                        markersize=4,
                        label=f"{split} {name}",
                    )
        ax.set_xlabel("epoch")
        ax.set_ylabel(unit)
        ax.set_title(heading, fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def save_lines(
    path: Path,
    xs: list[float],
    series: dict[str, list[float | None]],
    xlabel: str,
    ylabel: str,
    title: str,
    log_y: bool = False,
) -> None:
    """One labelled line with markers per entry of ``series`` (values at ``xs``; None leaves a gap), e.g. the
    reconstruction error of each model against the code size."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, values in series.items():
        ax.plot(xs, [np.nan if v is None else v for v in values], marker="o", markersize=4, label=label)
    ax.set_xticks(xs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def save_tradeoffs(
    path: Path, curves: dict[str, list[tuple[float, float, str]]], xlabel: str, ylabel: str, title: str
) -> None:
    """One labelled line with markers per entry of ``curves``, through its own points (x, y, note) in the order of
    x, each point annotated with its note, e.g. each model's distortion against its rate, a point per rate weight."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, points in curves.items():
        points = sorted(points)
        (line,) = ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=4, label=label)
        for x, y, note in points:
            ax.annotate(note, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7, color=line.get_color())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def save_roc(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray, float]], title: str) -> None:
    """ROC curves, one per entry of ``curves`` (false-positive rates, true-positive rates and the area under the
    curve, shown in its label), over the diagonal of a score that tells nothing."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for label, (fpr, tpr, area) in curves.items():
        ax.plot(fpr, tpr, label=f"{label} (AUROC {area:.4f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance (AUROC 0.5)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false-positive rate: share of normal examples flagged")
    ax.set_ylabel("true-positive rate: share of anomalies flagged")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def save_histogram(path: Path, values: dict[str, np.ndarray], xlabel: str, title: str) -> None:
    """Histograms of ``values`` over shared bins, one outline per entry (e.g. each class's anomaly scores), from the
    0.5th to the 99.5th percentile of them all (what lies outside is counted in the end bins)."""
    everything = np.concatenate(list(values.values()))
    low, high = np.percentile(everything, [0.5, 99.5])
    bins = np.linspace(low, max(high, low + 1e-9), 61)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, group) in enumerate(values.items()):
        ax.hist(
            np.clip(group, low, high), bins=bins, histtype="step", color=f"C{i % 10}", label=f"{label} ({len(group)})"
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("examples")
    ax.grid(alpha=0.3)
    if len(values) > 1:
        ax.legend(fontsize=8, title="label (examples)", title_fontsize=8)
    ax.set_title(title, fontsize=10)
    _save(fig, path)
