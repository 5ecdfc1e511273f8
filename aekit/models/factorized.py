"""The factorized-prior codec of photos (Balle, Laparra and Simoncelli 2017, "End-to-end optimized image
compression"; CompressAI's ``bmshj2018-factorized``): the GDN transforms (:mod:`aekit.models.gdn`) to a code map at
1/16 of the image, each of its M channels under a learned density of its own (:class:`FactorizedPrior`), no
hyperprior. Its codes are stored as a fully convolutional rate-distortion model's (``code_storage`` "maps")."""

from __future__ import annotations

from dataclasses import dataclass

from aekit.models.config import register
from aekit.models.gdn import GDNCodec, GDNConfig
from aekit.models.likelihood import LIKELIHOODS
from aekit.models.rate_distortion import FactorizedPrior


@register
@dataclass(frozen=True)
class FactorizedConfig(GDNConfig):
    """The factorized-prior codec of photos: its channels and the weight of the rate."""

    family = "factorized"
    label = "Factorized"
    model_class = GDNCodec
    noun = "the factorized codec"

    def build(self) -> GDNCodec:
        transforms = self.transforms()  # first: seeded alike, the hyperprior's start with the same weights
        prior = FactorizedPrior(self.code_dim)
        return GDNCodec(*transforms, LIKELIHOODS[self.likelihood], prior, self.rate_lambda, **self.model_settings())
