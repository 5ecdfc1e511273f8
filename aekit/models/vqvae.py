"""The vector-quantized auto-encoder (VQ-VAE, van den Oord et al. 2017), its codebook kept by exponential moving
averages (the paper's appendix) with dead codewords restarted."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from aekit.errors import DataError
from aekit.models.base import AutoEncoder, Loss, device_of, takes_examples
from aekit.models.config import NetConfig, option, register
from aekit.models.likelihood import LIKELIHOODS
from aekit.naming import option as named

# The largest codebook: indices of at most 16 bits, and a (K, embedding_dim) table that stays small.
MAX_CODEBOOK = 1 << 16


def _world() -> int:
    """How many processes train together (torchrun), 1 outside a process group."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class VectorQuantizer(nn.Module):
    """Nearest-codeword quantization of codes cut into vectors, with a codebook kept by moving averages.

    A code z of m * D values (D = ``embedding_dim``) is m vectors z_1..z_m; each is replaced by its nearest of the K
    codewords e_1..e_K (K = ``codebook_size``): k_j = argmin_k ||z_j - e_k||^2, q_j = e_{k_j}. The forward pass gives
    z + sg(q - z): q itself forward, the identity backward (the straight-through gradient), where sg stops gradients.

    The codebook has no gradient: ``update`` keeps, per codeword, moving averages of how many vectors it was assigned
    (N_k) and of their sum (S_k), with ``decay`` g: N_k <- g N_k + (1 - g) n_k, S_k <- g S_k + (1 - g) sum_{j: k_j=k}
    z_j, and sets e_k = S_k / N~_k, where N~_k = (N_k + eps) / (N + K eps) * N (N = sum_k N_k) is N_k Laplace-smoothed
    so that no codeword divides by zero. e_k is thus a moving average of the mean of the vectors assigned to it (one
    online k-means step). A codeword whose N_k falls below the threshold t = ``restart_below`` times an even share (the
    batch's vectors / K) is dead: it is moved onto a vector of the batch drawn at random, with N_k = t and S_k = t times
    that vector, so it stays only while each step assigns it at least t vectors (on digits this gave lower errors and
    fuller codebooks than a restart with an even share's count, which a useless codeword takes long to lose). The
    codebook starts with every N_k = 0, so (with restarts on) the first training step places every codeword on a
    vector of the first batch. Codebook and averages are buffers: saved with the weights and in checkpoints.
    """

    def __init__(self, codebook_size: int, embedding_dim: int, decay: float = 0.99, restart_below: float = 0.1):
        super().__init__()
        self.codebook_size, self.embedding_dim = codebook_size, embedding_dim
        self.decay, self.restart_below, self.epsilon = decay, restart_below, 1e-5
        bound = 1 / codebook_size  # what an untrained model quantizes to; training replaces it at its first step
        self.register_buffer("codebook", torch.empty(codebook_size, embedding_dim).uniform_(-bound, bound))
        self.register_buffer("ema_count", torch.zeros(codebook_size))
        self.register_buffer("ema_sum", torch.zeros(codebook_size, embedding_dim))

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """The index of the nearest codeword to each vector of each code: (n, m * D) floats to (n, m) int64."""
        vectors = z.detach().to(self.codebook.dtype).unflatten(-1, (-1, self.embedding_dim))
        # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2, in the codebook's precision: bf16 would tie near codewords.
        with torch.autocast(z.device.type, enabled=False):
            distances = (
                vectors.pow(2).sum(-1, keepdim=True) - 2 * vectors @ self.codebook.t() + self.codebook.pow(2).sum(-1)
            )
        return distances.argmin(-1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """The codes that indices (n, m) stand for: each index's codeword, (n, m * D)."""
        return F.embedding(indices, self.codebook).flatten(-2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """q with the straight-through gradient z + sg(q - z) where z needs gradients, else q exactly."""
        q = self.lookup(self.nearest(z))
        return z + (q - z).detach() if z.requires_grad else q

    @torch.no_grad()
    def update(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        """One moving-average step of the codebook toward the vectors of ``z`` assigned by ``indices``, then the
        restart of dead codewords; on the device (no synchronisation with the host, so a captured step holds it).
        Under torchrun the counts and sums are summed over the ranks and the restarts drawn by rank 0, so every
        rank keeps the same codebook."""
        vectors = z.detach().to(self.codebook.dtype).reshape(-1, self.embedding_dim)
        indices = indices.reshape(-1)
        stats = torch.zeros(self.codebook_size, 1 + self.embedding_dim, device=vectors.device, dtype=vectors.dtype)
        stats.index_add_(0, indices, torch.cat([torch.ones_like(vectors[:, :1]), vectors], 1))
        if _world() > 1:
            dist.all_reduce(stats)
        self.ema_count.mul_(self.decay).add_(stats[:, 0], alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(stats[:, 1:], alpha=1 - self.decay)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
        # A codeword never assigned (N_k = 0, only without restarts) keeps its place.
        means = torch.where(self.ema_count[:, None] > 0, self.ema_sum / smoothed[:, None], self.codebook)
        self.codebook.copy_(means)
        # The batch's vectors over all ranks, from the summed counts: the same on every rank, ragged batch or not.
        self._restart(vectors, stats[:, 0].sum() / self.codebook_size)

    def _restart(self, vectors: torch.Tensor, even_share: torch.Tensor) -> None:
        """Move the dead codewords (N_k below t = ``restart_below`` * ``even_share``) onto random vectors of the batch,
        with N_k = t."""
        threshold = self.restart_below * even_share
        dead = (self.ema_count < threshold)[:, None]
        picks = vectors[torch.randint(len(vectors), (self.codebook_size,), device=vectors.device)]
        if _world() > 1:
            dist.broadcast(picks, 0)
        self.codebook.copy_(torch.where(dead, picks, self.codebook))
        self.ema_sum.copy_(torch.where(dead, picks * threshold, self.ema_sum))
        self.ema_count.copy_(torch.where(dead[:, 0], threshold, self.ema_count))


class VQVAE(AutoEncoder):
    """Vector-quantized auto-encoder (van den Oord et al. 2017):

    loss = -log p(x | decoder(z_q)) + beta * ||z_e - sg(q)||^2,   z_e = encoder(x),   z_q = z_e + sg(q - z_e),

    where q replaces each of the code's code_dim / embedding_dim vectors by its nearest codeword
    (:class:`VectorQuantizer`), sg stops gradients, and the squared norm is summed over the code. The decoder sees q;
    its gradient passes to the encoder unchanged (straight-through); the commitment term (weight beta =
    ``commitment``) keeps the encoder's outputs near their codewords. The codebook has no gradient: each training
    step moves it by moving averages toward the mean of the vectors assigned to each codeword (in place of the
    paper's codebook loss ||sg(z_e) - q||^2) and restarts codewords that fell out of use.

    ``encoder`` is the network followed by the quantizer, so ``encode`` (and any ``decoder(encoder(x))``) gives the
    quantized code: (n, code_dim) floats, each vector one of the codebook's. ``code_indices`` gives the codewords'
    indices, (n, code_dim / embedding_dim), each worth log2(codebook_size) bits, and ``decode_indices`` decodes them.
    """

    code_storage = "indices"

    def __init__(self, network, decoder, likelihood, quantizer: VectorQuantizer, commitment: float = 0.25, **settings):
        super().__init__(nn.Sequential(network, quantizer), decoder, likelihood, **settings)
        self.commitment = commitment
        self.codebook_size = quantizer.codebook_size

    @property
    def quantizer(self) -> VectorQuantizer:
        return self.encoder[-1]

    def loss(self, x: torch.Tensor) -> Loss:
        x = self.training_input(x)
        z_e = self.encoder[0](x)
        indices = self.quantizer.nearest(z_e)
        q = self.quantizer.lookup(indices)
        if self.training:
            self.quantizer.update(z_e, indices)
        rec = self.likelihood.nll(self.decoder(z_e + (q - z_e).detach()), x).mean()
        commitment = (z_e - q).pow(2).sum(-1).mean()
        return Loss(rec + self.commitment * commitment, {"reconstruction": rec, "commitment": commitment})

    @takes_examples
    def code_indices(self, x: torch.Tensor) -> torch.Tensor:
        """The index of the codeword of each vector of each example's code: int64 (n, code_dim / embedding_dim)."""
        return self.quantizer.nearest(self.encoder[0](self.standardize(x)))

    def decode_indices(self, indices) -> torch.Tensor | np.ndarray:
        """The decoding of codeword indices (n, code_dim / embedding_dim): ``decode`` of the codes they stand for.
        Tensors in, tensors out, unchecked (of any type that holds the whole numbers, e.g. the float batches of
        :func:`aekit.models.inference.in_batches`); numpy in, numpy out, checked with one-line DataErrors."""
        if isinstance(indices, torch.Tensor):
            return self.decode(self.quantizer.lookup(indices.long()))
        array = np.asarray(indices)
        per_example = self.code_dim // self.quantizer.embedding_dim
        if array.dtype.kind not in "iu" or array.ndim != 2 or array.shape[1] != per_example:
            raise DataError(
                f"codeword indices of shape {array.shape} and type {array.dtype} were given to decode_indices, "
                f"which takes integers (n, {per_example}); give the indices code_indices made"
            )
        if array.size and not (array.min() >= 0 and array.max() < self.codebook_size):
            raise DataError(
                f"codeword indices from {array.min()} to {array.max()} were given to decode_indices, and the "
                f"codebook has {self.codebook_size}; give indices from 0 to {self.codebook_size - 1}"
            )
        with torch.no_grad():
            codes = self.quantizer.lookup(torch.from_numpy(array.astype(np.int64)).to(device_of(self)))
            return self.decode(codes).cpu().numpy()


@register
@dataclass(frozen=True)
class VQVAEConfig(NetConfig):
    """The vector-quantized auto-encoder: its codebook, the commitment weight and the codebook's moving averages."""

    family = "vqvae"
    label = "VQ-VAE"
    model_class = VQVAE

    codebook_size: int = option(256, "codewords in the codebook, K: each index takes log2 K bits (256: one byte)")
    embedding_dim: int = option(
        1,
        "values per codeword: the code of --code-dim values is cut into code_dim / embedding_dim vectors, each "
        "replaced by its nearest codeword (1: each value is one of K learned levels)",
    )
    commitment: float = option(0.25, "weight beta of the commitment loss ||z_e - sg(q)||^2")
    ema_decay: float = option(0.99, "decay of the codebook's moving averages (0: each step's assigned means)")
    restart_below: float = option(
        0.1,
        "restart a codeword on a random encoder output of the batch when its moving-average count of assigned "
        "vectors falls below this share of an even one (batch vectors / K); 0: never",
    )

    def problems(self) -> list[str]:
        problems = super().problems()
        if not 2 <= self.codebook_size <= MAX_CODEBOOK:
            problems.append(f"{named('codebook_size', self.codebook_size)} must be from 2 to {MAX_CODEBOOK}, e.g. 256")
        if self.embedding_dim < 1 or self.code_dim % self.embedding_dim:
            problems.append(
                f"{named('embedding_dim', self.embedding_dim)} must divide {named('code_dim', self.code_dim)} (the "
                f"code is cut into vectors of that many values); use {named('embedding_dim', 1)} or a divisor of "
                f"{named('code_dim')}"
            )
        if not self.commitment >= 0:  # also refuses NaN
            problems.append(f"{named('commitment', self.commitment)} must be >= 0")
        if not 0 <= self.ema_decay < 1:
            problems.append(f"{named('ema_decay', self.ema_decay)} must be in [0, 1), e.g. 0.99")
        if not 0 <= self.restart_below < 1:
            problems.append(f"{named('restart_below', self.restart_below)} must be in [0, 1), e.g. 0.1")
        return problems

    def build(self) -> VQVAE:
        network, decoder = self.networks()
        quantizer = VectorQuantizer(self.codebook_size, self.embedding_dim, self.ema_decay, self.restart_below)
        likelihood = LIKELIHOODS[self.likelihood]
        return VQVAE(network, decoder, likelihood, quantizer, self.commitment, **self.model_settings())
