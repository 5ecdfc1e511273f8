"""The figures of the rate-distortion benchmark (bench/compress.py): the curves, and originals beside each method's
decoding at about the same bytes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from aekit.report.plots import tile  # noqa: E402

TITLES = {
    "mnist": "MNIST, 10,000 test digits (28 x 28 grey)",
    "photos": "held-out photo tiles (64 x 64 colour)",
    "wholes": "held-out photos whole (3, colour)",
}
# PSNR shown up to here: above it only the codecs' best qualities lie, far from the learned codes.
PSNR_TOP = {"mnist": 40, "photos": 42, "wholes": 42}
COLOURS = {"JPEG": "C0", "WebP": "C1", "AVIF": "C2", "PCA": "0.55", "AE": "C4", "RD-AE": "C3", "CompressAI": "k"}


def style(curve: str) -> dict:
    """How a curve is drawn: a colour per method; the codecs' single files solid and their one file dotted, the
    fixed-bit codes thin with a marker per code size, the rate-distortion models bold (searched codes in dark red)."""
    method = curve.split(",")[0].split(" ")[0]
    line = {"color": COLOURS.get(method, "C5"), "markersize": 4, "linewidth": 1.2, "marker": "o"}
    if "one file of all" in curve:
        line.update(linestyle=":", marker="x")
    elif "fixed bits" in curve:
        code = int(curve.split("code ")[1].split(" ")[0])
        line.update(linewidth=0.8, marker={8: "v", 16: "^", 32: "s", 64: "v", 256: "s"}.get(code, "d"))
    elif method in ("RD-AE", "CompressAI"):
        line.update(linewidth=2.2, marker="D" if method == "RD-AE" else "s")
        if "fully-conv" in curve:
            line.update(color="C6")
        elif "searched" in curve:  # the same model, its codes searched for (aekit compress --search)
            line.update(color="darkred", marker="*", markersize=7)
        elif "bench/rate_distortion.py" not in curve and method == "RD-AE":
            line.update(linestyle="--")
    return line


def curves(path: Path, parts: dict[str, list[dict]]) -> None:
    """PSNR and SSIM against bits per pixel (bytes per image on the top axis), a row of axes per part."""
    fig, axes = plt.subplots(len(parts), 2, figsize=(14, 6 * len(parts)), squeeze=False, gridspec_kw={"hspace": 0.4})
    for (part, rows), row_axes in zip(parts.items(), axes):
        pixels = rows[0]["bytes_per_image"] * 8 / rows[0]["bpp"]
        for ax, key, label in zip(row_axes, ("psnr_db", "ssim"), ("PSNR (dB)", "SSIM")):
            _draw(ax, rows, key)
            ax.set(xscale="log", xlabel="bits per pixel (log scale)", ylabel=label, title=f"{TITLES[part]}: {label}")
            if key == "psnr_db":
                ax.set_ylim(top=PSNR_TOP[part])
            top = ax.secondary_xaxis("top", functions=(lambda b, p=pixels: b * p / 8, lambda y, p=pixels: y * 8 / p))
            top.set_xlabel("bytes per image")
            ax.grid(alpha=0.3, which="both")
        # The PSNR axes hold every curve (some have no SSIM): their legend, beside the SSIM axes.
        row_axes[1].legend(
            *row_axes[0].get_legend_handles_labels(), fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5)
        )
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def _draw(ax, rows: list[dict], key: str) -> None:
    for curve in dict.fromkeys(r["curve"] for r in rows):
        points = sorted((r["bpp"], r[key]) for r in rows if r["curve"] == curve and r.get(key) is not None)
        if points:
            ax.plot(*zip(*points), label=curve, **style(curve))


def nearest(points: list[dict], target: float) -> dict:
    """The point of a curve whose bytes per image are nearest ``target`` (on a log scale)."""
    return min(points, key=lambda p: abs(np.log(p["bytes_per_image"] / target)))


def equal_bytes(path: Path, originals: np.ndarray, rows: list[dict], target: float, title: str) -> None:
    """Originals, then each curve's decoding of them at its point nearest ``target`` bytes per image, labelled with
    that point's bytes and PSNR (the codecs' single files cannot go below their headers)."""
    shown = {"originals": originals}
    for curve in dict.fromkeys(r["curve"] for r in rows if "_shown" in r):
        best = nearest([r for r in rows if r["curve"] == curve], target)
        label = f"{curve}\n{best['setting']}: {best['bytes_per_image']:.1f} B, {best['psnr_db']:.1f} dB"
        shown[label] = best["_shown"]
    _labelled_rows(path, shown, f"{title}: each method's point nearest {target:.0f} bytes per image")


def _labelled_rows(path: Path, rows: dict[str, np.ndarray], title: str) -> None:
    """Each entry's images (n, channels, h, w) in a row of one picture, its label to the left."""
    first = next(iter(rows.values()))
    _, channels, height, width = first.shape
    gap = max(1, height // 14)
    canvas = tile(np.concatenate(list(rows.values())), len(first), gap=gap, fill=1.0)
    inches = (0.8 if height < 40 else 1.5) / height  # a cell's inches per pixel
    fig, ax = plt.subplots(figsize=(canvas.shape[1] * inches, canvas.shape[0] * inches))
    ax.imshow(canvas[..., 0] if channels == 1 else canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([i * (height + gap) + (height - 1) / 2 for i in range(len(rows))], list(rows), fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
