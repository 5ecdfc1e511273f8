"""Super-resolution on the MNIST test set: PSNR of a model trained to restore images downsampled by 2 and by 4
(``aekit train --task upscale``), beside bicubic and nearest-neighbour upsampling of the same small images; written
to bench/RESULTS.md ("## Super-resolution").

The small images are the test images averaged over factor x factor pixel blocks (14x14 and 7x7).

    python -m bench.upscale --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import sys

from aekit.evaluation.measures import psnr
from aekit.models import model_config
from aekit.models.resample import downsample, upsample
from aekit.report.plots import markdown_table, save_rows
from aekit.uses.enhance import upscale
from bench.mnist_runs import Bench, parser

HEADING = "## Super-resolution"


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.split("\n\n")[0], epochs=10)
    args.add_argument("--factors", default="2,4", help="downsampling factors, comma-separated")
    args.add_argument("--code-dim", type=int, default=128)
    args.add_argument("--hidden", default="512,256", help="MLP hidden widths, comma-separated")
    args = args.parse_args(argv)
    bench = Bench(args)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    clean = bench.data.x_test
    rows, figure = [], {"original": clean[:10]}
    for factor in (int(f) for f in args.factors.split(",")):
        model = bench.fit(
            model_config("ae", bench.data.shape, code_dim=args.code_dim, hidden=hidden, task="upscale", factor=factor)
        )
        low = downsample(clean, factor)
        outputs = {
            "nearest": upsample(low, factor, "nearest"),
            "bicubic": upsample(low, factor, "bicubic"),
            "aekit": upscale(model, low),
        }
        row = {
            "factor": factor,
            "input": f"{low.shape[2]}x{low.shape[3]}",
            **{name: psnr(out, clean) for name, out in outputs.items()},
        }
        row["gain over bicubic (dB)"] = row["aekit"] - row["bicubic"]
        rows.append(row)
        bench.say(f"factor {factor}: " + ", ".join(f"{k} {row[k]:.2f}" for k in outputs))
        figure.update({f"x{factor} {name}": out[:10] for name, out in outputs.items()})
    figure_path = args.results.parent / "figures" / "upscale.png"
    figure_path.parent.mkdir(exist_ok=True)
    save_rows(figure_path, figure, "MNIST test digits: enlarged from 1/factor size by each method")
    text = "\n".join(
        [
            HEADING,
            "",
            "`bench/upscale.py`: PSNR (dB, peak 1, mean over the 10,000 MNIST test images) of the test "
            "images restored from their block-averaged versions, by nearest-neighbour and bicubic upsampling (clipped "
            f"to [0, 1]) and by aekit's upscaler (an MLP {'-'.join(map(str, hidden))} auto-encoder with a "
            f"{args.code_dim}-dimensional code, cross-entropy loss, trained with `--task upscale --factor F`).",
            "",
            bench.settings_line(),
            markdown_table(
                rows,
                ["factor", "input", "nearest", "bicubic", "aekit", "gain over bicubic (dB)"],
                {"nearest": ".2f", "bicubic": ".2f", "aekit": ".2f", "gain over bicubic (dB)": "+.2f"},
            ).rstrip(),
            "",
            "Figure: `bench/figures/upscale.png` (each method's output for ten test digits).",
            "",
        ]
    )
    bench.publish(HEADING, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
