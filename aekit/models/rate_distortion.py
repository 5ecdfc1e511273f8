"""The rate-distortion auto-encoder (Balle, Laparra and Simoncelli 2017, "End-to-end optimized image compression"):
an integer code, a learned density of each of its dimensions, and a loss that counts the bits an entropy coder spends
on the code. The density is Balle et al.'s non-parametric factorized prior (2018, "Variational image compression
with a scale hyperprior", appendix 6.1; CompressAI's ``EntropyBottleneck``)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aekit import entropy_coding
from aekit.errors import AekitError
from aekit.models import nets
from aekit.models.base import AutoEncoder, Loss, takes_examples
from aekit.models.config import NetConfig, option, register
from aekit.models.likelihood import LIKELIHOODS
from aekit.naming import option as named

# The least probability a code value is counted at: -log2 of it (30 bits) bounds the rate of one value.
PROBABILITY_BOUND = 1e-9
# The probability mass each tail of a dimension's density may leave outside the integers its table lists: values
# there are coded as escapes (32 bits more), which happens about twice in a million values.
TAIL_MASS = 1e-6
# The integers the search for the tails looks among: -2^30 .. 2^30.
SEARCH_RANGE = 1 << 30
# The search for integer codes (RateDistortionAE.searched_symbols): at most this many rounds (on MNIST it stops
# after about 12, each example once no change lowers its loss); a change must lower the loss by more than the
# tolerance, in nats, so that float noise between batches of another make-up is not taken for a gain; and at most
# this many candidate codes are decoded at once.
SEARCH_ROUNDS = 64
SEARCH_TOLERANCE = 1e-4
SEARCH_CANDIDATES = 8192
# By default the search keeps each example's code within 2% more bits than its rounded code's (and so the file within
# about 2% of rounding's): the loss it lowers trades bits for error at the run's lambda, and a model whose prior is
# still poor took many more bytes for its lower error (digits, one epoch: 2.7 times), where `--search` promises fewer
# bytes at an equal error. On MNIST after 5 epochs the bound keeps most of the gain: the squared error falls by 29%
# at 1.5% more bytes, where unbounded it falls by 33% at 4.3% more (README, "Searching for codes").
SEARCH_RATE_SLACK = 0.02


def _bounded(p: torch.Tensor) -> torch.Tensor:
    """max(p, PROBABILITY_BOUND), with the gradient of p everywhere (a value at the bound can still rise)."""
    return p + (p.clamp_min(PROBABILITY_BOUND) - p).detach()


class FactorizedPrior(nn.Module):
    """A learned density of each code dimension j, independent of the others: the non-parametric cumulative
    c_j(y) = sigmoid(f_j(y)) of Balle et al. (2018, appendix 6.1), f_j a chain of K = 4 small layers

        f_j = h_4 o g_3 o h_3 o g_2 o h_2 o g_1 o h_1,
        h_k(x) = softplus(H_k) x + b_k,   g_k(x) = x + tanh(a_k) * tanh(x),

    from 1 value to ``filters`` (3, 3, 3) to 1, with parameters H_k, b_k, a_k of its own per dimension. softplus(H)
    > 0 and tanh(a) > -1 make each layer increasing, so c_j rises from 0 to 1: it is a distribution function.

    The probability of an integer y, and the density of y + u with u ~ U(-1/2, 1/2) at a real y (the training code),
    are both p_j(y) = c_j(y + 1/2) - c_j(y - 1/2): the density convolved with the unit box. The rate of a code is
    R(y) = -sum_j log2 p_j(y_j) bits, what an entropy coder under these probabilities spends on it.

    ``tables`` turns the density into what the coder uses (:class:`aekit.entropy_coding.Tables`): per dimension, the
    integers between the points where each tail of c_j holds ``TAIL_MASS`` (at most
    :data:`aekit.entropy_coding.MAX_SUPPORT` of them: one width K for all dimensions) and an escape for the rest, with
    p_j quantized to 16-bit frequencies. It is computed in float64 on the CPU from the weights alone, whatever device
    the model is on, so compressing and decompressing get the same tables (a compressed file holds their checksum, which
    would tell a machine whose arithmetic differed in the last bit at a rounding boundary, instead of letting it decode
    wrong codes).
    """

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 1.0):
        super().__init__()
        widths = (1, *filters, 1)
        # Balle's initialisation: the chain starts as a logistic-like cumulative of width about init_scale. His 10
        # suits codes spread over tens of integers; a fresh encoder's code lies within about +-1, and on digits a
        # density 10 wide was still 5 to 10 bits an example too wide after 300 steps, where one 1 wide fit within 1.
        scale = init_scale ** (1 / (len(widths) - 1))
        self.matrices, self.biases, self.factors = nn.ParameterList(), nn.ParameterList(), nn.ParameterList()
        for k, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            start = math.log(math.expm1(1 / scale / fan_out))  # softplus(start) = 1 / (scale fan_out)
            self.matrices.append(nn.Parameter(torch.full((channels, fan_out, fan_in), start)))
            self.biases.append(nn.Parameter(torch.empty(channels, fan_out, 1).uniform_(-0.5, 0.5)))
            if k < len(widths) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, fan_out, 1)))

    def logits(self, y: torch.Tensor) -> torch.Tensor:
        """f_j(y) for values y (d, m): row j under dimension j's chain, in float32 at least (autocast off: a bf16
        cumulative would misplace the tails)."""
        y = y.float() if y.dtype in (torch.float16, torch.bfloat16) else y
        with torch.autocast(y.device.type, enabled=False):
            x = y.unsqueeze(1)
            for k, (matrix, bias) in enumerate(zip(self.matrices, self.biases)):
                x = F.softplus(matrix) @ x + bias
                if k < len(self.factors):
                    x = x + torch.tanh(self.factors[k]) * torch.tanh(x)
            return x.squeeze(1)

    def mass(self, y: torch.Tensor) -> torch.Tensor:
        """p_j(y) = c_j(y + 1/2) - c_j(y - 1/2) for values y (d, m). Where both cumulatives are near 1 it is taken
        as (1 - c_j(y - 1/2)) - (1 - c_j(y + 1/2)), with 1 - sigmoid(f) = sigmoid(-f), which keeps its precision."""
        lower, upper = self.logits(torch.cat([y - 0.5, y + 0.5], 1)).chunk(2, 1)
        sign = torch.where(lower + upper > 0, -1.0, 1.0)
        return (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()

    def rate_bits(self, y: torch.Tensor) -> torch.Tensor:
        """R(y) = -sum log2 p_j(value) per code of y, bits, each p at least PROBABILITY_BOUND: y (n, d) a code
        vector, dimension j under density j, or (n, d, h, w) a code map, every value of channel j under density j."""
        values = y.movedim(1, 0).reshape(y.shape[1], -1)
        bits = -torch.log2(_bounded(self.mass(values)))
        return bits.reshape(y.shape[1], len(y), -1).sum((0, 2))

    def _support(self) -> tuple[torch.Tensor, int]:
        """low (d,) and K: each dimension's table lists the integers low_j .. low_j + K - 1. low_j is the largest
        integer m with c_j(m - 1/2) <= TAIL_MASS and high_j the smallest with 1 - c_j(m + 1/2) <= TAIL_MASS (both found
        by bisection, c_j being increasing); K = max_j(high_j - low_j + 1), at most MAX_SUPPORT, a wider dimension
        keeping the K integers around the middle of its own range. Called on a float64 copy (:meth:`tables`)."""
        edge = math.log(TAIL_MASS / (1 - TAIL_MASS))  # sigmoid(f) <= TAIL_MASS where f <= edge
        low = self._largest(lambda m: self.logits(m - 0.5) <= edge)
        high = self._largest(lambda m: self.logits(m + 0.5) < -edge) + 1
        widths = high - low + 1
        width = min(int(widths.max()), entropy_coding.MAX_SUPPORT)
        return torch.where(widths > width, torch.div(low + high + 1 - width, 2, rounding_mode="floor"), low), width

    def _largest(self, holds) -> torch.Tensor:
        """Per dimension, the largest integer m in [-SEARCH_RANGE, SEARCH_RANGE) where ``holds`` ((d, 1) float64 to
        (d, 1) booleans, true below a point and false above it) is true, by bisection; -SEARCH_RANGE where none is."""
        channels = len(self.matrices[0])
        below = torch.full((channels, 1), -float(SEARCH_RANGE), dtype=torch.float64)
        above = -below
        for _ in range(SEARCH_RANGE.bit_length() + 1):
            middle = torch.floor((below + above) / 2)
            true = holds(middle)
            below, above = torch.where(true, middle, below), torch.where(true, above, middle)
        return below[:, 0].long()

    @torch.no_grad()
    def tables(self) -> entropy_coding.Tables:
        """The coder's tables of this density: p_j of each integer of the support, then the escape's mass
        c_j(low_j - 1/2) + 1 - c_j(low_j + K - 1/2), quantized by :func:`aekit.entropy_coding.frequency_tables`.
        Computed on a float64 CPU copy of the weights."""
        density = copy.deepcopy(self).cpu().double()
        low, width = density._support()
        grid = (low[:, None] + torch.arange(width)).double()
        ends = density.logits(torch.stack([low - 0.5, low + width - 0.5], 1).double())
        escape = torch.sigmoid(ends[:, :1]) + torch.sigmoid(-ends[:, 1:])
        return entropy_coding.frequency_tables(low.numpy(), torch.cat([density.mass(grid), escape], 1).numpy())


class Round(nn.Module):
    """Rounding to the nearest integer: the code an entropy coder stores."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        # + 0 turns a -0.0 (the rounding of -0.3) into 0.0: the code has the bits of its integers as floats.
        return torch.round(y) + 0.0


class RateDistortionAE(AutoEncoder):
    """Rate-distortion auto-encoder (Balle et al. 2017):

    loss = -log p(x | decoder(y~)) + lambda * R(y~),   y~ = encoder(x) + u,   u ~ U(-1/2, 1/2)^d,

    R(y) = -sum_j log2 p_j(y_j) the bits of the code under the learned factorized prior (:class:`FactorizedPrior`).
    The distortion is the likelihood's negative log-likelihood in nats per example (cross-entropy, or the sum of
    squared differences), the rate is in bits per example, so lambda = ``rate_lambda`` is in nats per bit: a larger
    one buys fewer bits with a larger error. The uniform noise stands in, while training, for the rounding that
    evaluation and compression apply (y^ = round(encoder(x)), whose loss is the distortion of what decompressing
    gives plus lambda times the bits an entropy coder spends, to within its tables' quantization).

    ``encoder`` is the network followed by the rounding, so ``encode`` gives the integer code as floats (n, code_dim)
    and ``decode`` of it what decompression gives. ``code_symbols`` gives it as int64, ``rate_bits`` its bits per
    example, and ``probability_tables`` the coder's tables (:class:`aekit.entropy_coding.Tables`).

    With fully convolutional networks (``--net fully-conv``) the code is a map (n, code_dim, h, w), code_dim
    channels each under its own density, and the model codes images of any size: ``map_symbols`` and ``decode_map``
    take batches of any height and width.
    """

    def __init__(self, network, decoder, likelihood, prior: FactorizedPrior, rate_lambda: float = 0.03, **settings):
        super().__init__(nn.Sequential(network, Round()), decoder, likelihood, **settings)
        self.prior, self.rate_lambda = prior, rate_lambda

    @property
    def entropy_model(self) -> FactorizedPrior:
        return self.prior

    def loss(self, x: torch.Tensor) -> Loss:
        x = self.training_input(x)
        y = self.encoder[0](x).float()  # noise and rounding in float32: bf16 resolves only 0.5 at 100
        y = y + torch.rand_like(y) - 0.5 if self.training else torch.round(y)
        rec = self.likelihood.nll(self.decoder(y), x).mean()
        rate = self.prior.rate_bits(y).mean()
        return Loss(rec + self.rate_lambda * rate, {"reconstruction": rec, "rate_bits": rate})

    @takes_examples
    def code_symbols(self, x: torch.Tensor) -> torch.Tensor:
        """The integer code of each example: int64 (n, code_dim), what ``aekit compress`` entropy-codes."""
        return self.encode(x).long()

    @takes_examples
    def rate_bits(self, x: torch.Tensor) -> torch.Tensor:
        """-log2 p(round(encoder(x))) under the prior, bits per example (n,)."""
        return self.prior.rate_bits(self.encode(x))

    @torch.no_grad()
    @takes_examples
    def searched_symbols(
        self, x: torch.Tensor, rounds: int = SEARCH_ROUNDS, rate_slack: float = SEARCH_RATE_SLACK
    ) -> torch.Tensor:
        """Integer codes that the model's own loss at integer codes, L(y) = -log p(x | decoder(y)) + lambda R(y),
        finds better than rounding's (rate-distortion optimized quantization): from y = round(encoder(x)), each round
        makes, in each example's code, the one change of one value by +-1 that lowers L most among those that keep
        R(y) <= (1 + ``rate_slack``) R(round(encoder(x))) (any change with ``rate_slack`` = inf), until none lowers
        it (or after ``rounds``). int64 (n, code_dim), decoded as any code; L(y) never rises above rounding's, nor
        R(y) above its bound."""
        if self.fully_convolutional:
            raise AekitError(
                "code maps are not searched: each image's map has too many values to try one at a time; "
                "compress without --search"
            )
        if not rate_slack >= 0:  # also refuses NaN
            raise AekitError(f"--search-rate-slack {rate_slack} must be a number >= 0 (inf: no bound), e.g. 0.02")
        target = self.standardize(x)
        y = self.encoder(target)
        moves = torch.cat([torch.eye(y.shape[1]), -torch.eye(y.shape[1])]).to(y)
        loss, bits = self._integer_loss(y, target)
        # inf x 0 bits would be NaN, which no rate is below.
        budget = torch.full_like(bits, math.inf) if math.isinf(rate_slack) else bits * (1 + rate_slack)
        active = torch.arange(len(y), device=y.device)
        for _ in range(rounds):
            best, move = self._best_moves(y[active], target[active], budget[active], moves)
            better = best < loss[active] - SEARCH_TOLERANCE
            active = active[better]
            if len(active) == 0:
                break
            y[active] += moves[move[better]]
            loss[active] = best[better]
        return y.long()

    def _best_moves(self, y: torch.Tensor, target: torch.Tensor, budget: torch.Tensor, moves: torch.Tensor):
        """For each code of y, the least loss among its changes y + moves[k] of at most ``budget`` bits (inf where
        there is none) and the k giving it."""
        best, move = [], []
        for start in range(0, len(y), step := max(1, SEARCH_CANDIDATES // len(moves))):
            part = y[start : start + step]
            candidates = (part[:, None] + moves).flatten(0, 1)
            targets = target[start : start + step].repeat_interleave(len(moves), 0)
            loss, bits = self._integer_loss(candidates, targets)
            within = bits.view(len(part), len(moves)) <= budget[start : start + step, None]
            least = torch.where(within, loss.view(len(part), len(moves)), math.inf).min(1)
            best.append(least.values)
            move.append(least.indices)
        return torch.cat(best), torch.cat(move)

    def _integer_loss(self, y: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L(y) = -log p(target | decoder(y)) + lambda R(y) per code, nats (:meth:`loss` of rounded codes), and
        R(y), bits."""
        bits = self.prior.rate_bits(y)
        return self.likelihood.nll(self.decoder(y), target) + self.rate_lambda * bits, bits

    @property
    def code_storage(self) -> str:
        """Integer codes entropy-coded ("entropy"), or code maps of images of any size ("maps")."""
        return "maps" if self.fully_convolutional else "entropy"

    @property
    def fully_convolutional(self) -> bool:
        """Whether the code is a map, and images of any size can be coded (``map_symbols``, ``decode_map``)."""
        return len(self.code_shape) == 3

    @property
    def takes_any_size(self) -> bool:
        """Whether :meth:`restore` takes images of any size: a fully convolutional model's."""
        return self.fully_convolutional

    @torch.no_grad()
    def restore(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction of images of any one size (n, channels, H, W) in [0, 1], fully convolutional model: the
        decoding of their integer code maps, as ``aekit decompress`` gives them back."""
        return self.decode_map(self.map_symbols(x), *x.shape[-2:])

    def map_size(self, height: int, width: int) -> tuple[int, int]:
        """The height and width of the code map of an image of ``height`` x ``width`` (fully convolutional)."""
        return nets.code_map_size(height, width, len(self.config.hidden))

    @torch.no_grad()
    def map_symbols(self, x: torch.Tensor) -> torch.Tensor:
        """The integer code maps of images of any one size (n, channels, H, W) in [0, 1], fully convolutional model:
        int64 (n, code_dim, ceil(H / 2^L), ceil(W / 2^L)), the image padded by repeating its last row and column."""
        return self.encoder(x).long()

    @torch.no_grad()
    def decode_map(self, y: torch.Tensor, height: int | None = None, width: int | None = None) -> torch.Tensor:
        """The images of ``height`` x ``width`` that integer code maps (n, code_dim, h, w) decode to: the decoder's
        mean at the padded size, cropped (what ``decode`` gives at the training size); without them, uncropped, at
        2^L h x 2^L w (what an ONNX decoder of any map size gives: aekit.uses.export)."""
        return self.likelihood.mean(self._map_output(y, height, width))

    @torch.no_grad()
    def map_nll(self, x: torch.Tensor) -> torch.Tensor:
        """-log p(x | decoding of round(encoder(x))) per image, nats (n,), of images of any one size (n, channels, H,
        W) in [0, 1], each whole: :func:`aekit.evaluation.anomaly.reconstruction_nll` at their own size (a fully
        convolutional model standardizes nothing)."""
        return -self.likelihood.log_prob(self._map_output(self.map_symbols(x), *x.shape[-2:]), x)

    def _map_output(self, y: torch.Tensor, height: int | None, width: int | None) -> torch.Tensor:
        """The likelihood's parameters (logits, or the Gaussian's mean) of integer code maps' images, cropped to
        ``height`` x ``width``."""
        return self.decoder[0](y.float())[..., :height, :width]

    def probability_tables(self) -> entropy_coding.Tables:
        """The tables the entropy coder codes the integer codes under (:meth:`FactorizedPrior.tables`)."""
        return self.prior.tables()


@register
@dataclass(frozen=True)
class RateDistortionConfig(NetConfig):
    """The rate-distortion auto-encoder: the weight of the rate."""

    family = "rd-ae"
    label = "RD-AE"
    model_class = RateDistortionAE
    code_maps = True

    rate_lambda: float = option(
        0.03,
        "weight lambda of the rate, nats per bit: loss = distortion (nats per example) + lambda * rate (bits per "
        "example of the rounded code under the learned prior); larger gives fewer bits and larger errors (MNIST, "
        "MLP 512-256: 0.03 about 15 bytes an image, 0.3 about 6.6, 1.0 about 3.4)",
    )

    def problems(self) -> list[str]:
        problems = super().problems()
        if not 0 <= self.rate_lambda < math.inf:  # also refuses NaN
            problems.append(f"{named('rate_lambda', self.rate_lambda)} must be a finite number >= 0, e.g. 0.03")
        return problems

    def build(self) -> RateDistortionAE:
        network, decoder = self.networks()
        prior = FactorizedPrior(self.code_dim)
        likelihood = LIKELIHOODS[self.likelihood]
        return RateDistortionAE(network, decoder, likelihood, prior, self.rate_lambda, **self.model_settings())
