"""Denoising on the MNIST test set: PSNR of the noisy input, of its PCA projection, of a plain auto-encoder and of a
denoising auto-encoder trained on that noise, all at one code size; written to bench/RESULTS.md ("## Denoising").

Noise (on the [0, 1] intensities, seeded): gaussian with sigma 0.3 and 0.5 (not clipped), masking of 25% and 50% of
the pixels (set to 0). PCA projects the noisy image onto the principal subspace of the clean training images.

    python -m bench.denoise --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import sys

import torch

from aekit.evaluation.measures import psnr
from aekit.models import corrupt, model_config
from aekit.report.plots import markdown_table, save_rows
from aekit.uses.enhance import denoise
from bench.mnist_runs import Bench, parser

HEADING = "## Denoising"
NOISES = (("gaussian", 0.3), ("gaussian", 0.5), ("masking", 0.25), ("masking", 0.5))


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.split("\n\n")[0], epochs=10)
    args.add_argument("--code-dim", type=int, default=32)
    args.add_argument("--hidden", default="512,256", help="MLP hidden widths, comma-separated")
    args = args.parse_args(argv)
    bench = Bench(args)
    shape, hidden = bench.data.shape, tuple(int(h) for h in args.hidden.split(","))
    clean = bench.data.x_test
    pca = bench.fit(model_config("pca", shape, code_dim=args.code_dim))
    ae = bench.fit(model_config("ae", shape, code_dim=args.code_dim, hidden=hidden))
    bench.say("PCA and the plain AE fitted")
    rows, figure = [], {"clean": clean[:10]}
    for kind, level in NOISES:
        dae = bench.fit(
            model_config("dae", shape, code_dim=args.code_dim, hidden=hidden, noise=kind, noise_level=level)
        )
        torch.manual_seed(1)
        noisy = corrupt(torch.from_numpy(clean), kind, level).numpy()
        outputs = {
            "noisy input": noisy,
            "PCA": denoise(pca, noisy),
            "AE": denoise(ae, noisy),
            "DAE": denoise(dae, noisy),
        }
        rows.append({"noise": f"{kind} {level:g}", **{name: psnr(out, clean) for name, out in outputs.items()}})
        bench.say(", ".join(f"{k} {v:.2f}" if isinstance(v, float) else v for k, v in rows[-1].items()))
        figure.update({f"{kind} {level:g}": noisy[:10], f"DAE ({kind} {level:g})": outputs["DAE"][:10]})
    figure_path = args.results.parent / "figures" / "denoise.png"
    figure_path.parent.mkdir(exist_ok=True)
    save_rows(figure_path, figure, "MNIST test digits: noisy inputs and the DAE's outputs")
    columns = ["noise", "noisy input", "PCA", "AE", "DAE"]
    text = "\n".join(
        [
            HEADING,
            "",
            "`bench/denoise.py`: PSNR (dB, peak 1, mean over the 10,000 MNIST test images) of the noisy "
            f"input and of each model's output from it, code size {args.code_dim} for all three models; the AE and "
            f"the DAEs are MLPs {'-'.join(map(str, hidden))} with the cross-entropy loss, one DAE per noise trained on "
            "that noise, the AE on clean images; PCA is fitted on the clean training images.",
            "",
            bench.settings_line(),
            markdown_table(rows, columns, {c: ".2f" for c in columns[1:]}).rstrip(),
            "",
            "Figure: `bench/figures/denoise.png` (noisy inputs over the DAE's outputs).",
            "",
        ]
    )
    bench.publish(HEADING, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
