"""VQ-VAE against the AE at equal bytes per image on the MNIST test set: squared error per image, compressed bytes
per image and the VQ-VAE's codebook perplexity; written to bench/RESULTS.md ("## VQ-VAE against the AE at equal
bytes (MNIST)").

Bytes per image are the size of one compressed file holding all 10,000 test images divided by 10,000: for the AE its
code quantized to B bits per value (:func:`aekit.uses.compress.compress`, codec version 1: header and per-dimension
ranges included), for the VQ-VAE its codeword indices stored losslessly at log2 K bits each (:func:`aekit.codec.
encode_indices`, version 2), decoded from that file. Perplexity: exp of the entropy of the test set's codeword
indices; n log2(perplexity) / 8 bytes per image is what an entropy coder of the indices (one distribution for all of
them) would approach.

    python -m bench.vqvae_mnist --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import math
import sys

import numpy as np

from aekit import codec
from aekit.evaluation.measures import codebook_perplexity
from aekit.models import model_config
from aekit.report.plots import markdown_table
from aekit.training import run_folder
from aekit.uses.compress import compress, decompress
from bench.mnist_runs import Bench, fit, parser

HEADING = "## VQ-VAE against the AE at equal bytes (MNIST)"
# (code size, bits per value) of the AEs, and (code size, values per codeword) of the VQ-VAEs with 256 codewords:
# 8 and 16 bytes per image each.
AES = ((8, 8), (16, 4), (16, 8), (32, 4))
VQVAES = ((8, 1), (16, 2), (32, 4), (16, 1), (32, 2))
CODEBOOK = 256


def sse(output: np.ndarray, clean: np.ndarray) -> float:
    return float(((output.astype(np.float64) - clean) ** 2).reshape(len(clean), -1).sum(1).mean())


def trained(bench: Bench, name: str, code_dim: int, hidden: tuple[int, ...], **fields):
    spec = model_config(name, bench.data.shape, code_dim=code_dim, hidden=hidden, **fields)
    model, seconds = fit(spec, bench.data, bench.settings, bench.device, bench.args.seed)
    bench.say(f"fitted {name} (code {code_dim}{', ' if fields else ''}{fields or ''}) in {seconds:.0f} s")
    return model.cpu().eval()


def ae_rows(bench: Bench, hidden: tuple[int, ...]) -> list[dict]:
    clean, rows, models = bench.data.x_test, [], {}
    for code_dim, bits in AES:
        if code_dim not in models:  # one AE a code size, compressed at each of its bit depths
            models[code_dim] = trained(bench, "ae", code_dim, hidden)
        model = models[code_dim]
        data = compress(model, clean, bits)
        rows.append(
            {
                "model": "AE",
                "code": code_dim,
                "stored as": f"{bits} bits a value",
                "bytes_per_image": len(data) / len(clean),
                "sse_per_image": sse(decompress(model, data), clean),
            }
        )
    return rows


def vqvae_rows(bench: Bench, hidden: tuple[int, ...]) -> list[dict]:
    clean, rows = bench.data.x_test, []
    for code_dim, embedding_dim in VQVAES:
        model = trained(bench, "vqvae", code_dim, hidden, embedding_dim=embedding_dim, codebook_size=CODEBOOK)
        data = codec.encode_indices(model.code_indices(clean), CODEBOOK, run_folder.fingerprint(model))
        stored, _ = codec.decode(data, "the index file")
        perplexity = codebook_perplexity(model, clean)
        per_image = code_dim // embedding_dim
        rows.append(
            {
                "model": "VQ-VAE",
                "code": f"{code_dim} = {per_image} x {embedding_dim}",
                "stored as": f"{per_image} indices of {math.log2(CODEBOOK):.0f} bits",
                "bytes_per_image": len(data) / len(clean),
                "sse_per_image": sse(model.decode_indices(stored.indices), clean),
                "codebook_perplexity": perplexity,
                "entropy_bytes_per_image": per_image * math.log2(perplexity) / 8,
            }
        )
        bench.say(f"  {rows[-1]['bytes_per_image']:.2f} B, sse {rows[-1]['sse_per_image']:.3f}, ppl {perplexity:.1f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.split("\n\n")[0], epochs=5)
    args.add_argument("--hidden", default="512,256", help="MLP hidden widths, comma-separated")
    args = args.parse_args(argv)
    bench = Bench(args)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    rows = ae_rows(bench, hidden) + vqvae_rows(bench, hidden)
    rows.sort(key=lambda row: round(row["bytes_per_image"]))
    text = "\n".join(
        [
            HEADING,
            "",
            "`bench/vqvae_mnist.py`: the VQ-VAE (issue 16's proof of the model registry) beside the AE at the same "
            "bytes per MNIST test image. Squared error per image: the sum over the 784 pixels of intensities in "
            "[0, 1] of what comes back from the compressed file. AE: its code quantized to B bits per value "
            "(`aekit compress`, 36 bytes of header and checksum plus 8 per code dimension for one file of 10,000 "
            f"images). VQ-VAE: {CODEBOOK} codewords, the code cut into vectors of `embedding_dim` values, each "
            "stored as its codeword's index, losslessly (codec version 2, 40 bytes of header and checksum a file). "
            f"Both MLPs {'-'.join(map(str, hidden))} with the cross-entropy loss; the VQ-VAE with its defaults "
            "(commitment 0.25, moving-average decay 0.99, dead codewords restarted below a tenth of an even share). "
            "`codebook_perplexity`: exp of the entropy of the test indices (of 256); `entropy_bytes_per_image`: "
            "what an entropy coder of the indices would approach. Few epochs, on a CPU: neither model is converged.",
            "",
            bench.settings_line(),
            markdown_table(
                rows,
                ["model", "code", "stored as", "bytes_per_image", "sse_per_image", "codebook_perplexity"]
                + ["entropy_bytes_per_image"],
                {
                    "bytes_per_image": ".2f",
                    "sse_per_image": ".3f",
                    "codebook_perplexity": ".1f",
                    "entropy_bytes_per_image": ".2f",
                },
            ).rstrip(),
            "",
        ]
    )
    bench.publish(HEADING, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
