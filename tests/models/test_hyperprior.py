"""The scale hyperprior family (issue 30, item 1): GDN and its inverse, the code map at 1/16 of any image and the
hyper-code at 1/4 of it, both codes' bits counted, training lowering the loss, the integer hyper-decoder's scale
indices (those of the float one, and the same whatever the threads), the table of scales and its coder's tables."""

import math

import numpy as np
import pytest
import torch
from helpers import smooth_images

from aekit import entropy_coding
from aekit.errors import AekitError, DataError
from aekit.models import build_model, model_config
from aekit.models.hyperprior import (
    GDN,
    SCALE_TABLE,
    TAIL_MASS,
    LowerBound,
    gaussian_bits,
    scale_tables,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def hyperprior(shape=(3, 32, 32), **options):
    torch.manual_seed(0)
    options = {"code_dim": 6, "channels": 5, "likelihood": "gaussian", **options}
    return build_model(model_config("hyperprior", shape, **options))


@pytest.mark.parametrize("inverse", [False, True])
def test_gdn_divides_each_channel_by_the_norm_of_all(inverse):
    torch.manual_seed(0)
    gdn = GDN(4, inverse=inverse)
    with torch.no_grad():
        gdn.beta.uniform_(-2, 2)  # any sign: beta = b^2 + 1e-6 and gamma = g^2 stay positive
        gdn.gamma.uniform_(-1, 1)
    x = torch.randn(2, 4, 3, 5)
    beta, gamma = gdn.beta.detach() ** 2 + 1e-6, gdn.gamma.detach() ** 2
    norm = torch.sqrt(beta[None, :, None, None] + torch.einsum("ij,njhw->nihw", gamma, x**2))
    np.testing.assert_allclose(gdn(x).detach(), x * norm if inverse else x / norm, rtol=1e-5)
    fresh = GDN(3)  # starts at beta = 1, gamma = 0.1 I
    y = torch.tensor([[[[2.0]], [[0.0]], [[-1.0]]]])
    np.testing.assert_allclose(fresh(y)[0, :, 0, 0].detach(), [2 / math.sqrt(1.4), 0, -1 / math.sqrt(1.1)], 1e-5)


@pytest.mark.parametrize("height, width", [(32, 32), (37, 50), (1, 1), (16, 70)])
def test_the_code_map_is_a_sixteenth_and_the_hyper_code_a_quarter_of_it(height, width):
    model = hyperprior().eval()
    x = torch.rand(2, 3, height, width)
    y = model.map_symbols(x)
    assert y.shape == (2, 6, math.ceil(height / 16), math.ceil(width / 16)) == (2, 6, *model.map_size(height, width))
    assert torch.equal(y, torch.round(y)) and y.dtype == torch.int64
    z = model.hyper_symbols(model.latent_maps(x))
    assert z.shape == (2, 5, *model.hyper_map_size(*y.shape[-2:]))
    assert model.restore(x).shape == x.shape
    assert model.code_shape == (6, 2, 2) and model.takes_any_size and model.code_storage == "hyper-maps"


def test_both_codes_bits_are_counted_and_training_lowers_the_loss():
    model = hyperprior()
    x = smooth_images(8)
    model.eval()
    parts = model.loss(x).parts
    latent = model.latent_maps(x)
    y, z = torch.round(latent), model.hyper_symbols(latent).float()
    hyper = model.prior.rate_bits(z)
    assert torch.allclose(parts["hyper_rate_bits"], hyper.mean())
    assert parts["rate_bits"] > parts["hyper_rate_bits"] > 0
    assert torch.allclose(model.rate_bits(x), gaussian_bits(y, model._scales(z, y.shape[-2:])) + hyper)
    before = model.loss(x).total.item()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(40):
        optimizer.zero_grad()
        model.loss(x).total.backward()
        optimizer.step()
    model.eval()
    assert model.loss(x).total.item() < 0.7 * before


def test_a_larger_lambda_trades_error_for_fewer_bits():
    x = smooth_images(8)
    results = {}
    for rate_lambda in (0.001, 1.0):
        model = hyperprior(rate_lambda=rate_lambda)
        optimizer = torch.optim.Adam(model.parameters(), 1e-2)
        for _ in range(60):
            optimizer.zero_grad()
            model.loss(x).total.backward()
            optimizer.step()
        parts = model.eval().loss(x).parts
        results[rate_lambda] = parts["reconstruction"].item(), parts["rate_bits"].item()
    assert results[1.0][1] < results[0.001][1] and results[1.0][0] > results[0.001][0]


def test_the_scale_table_and_its_coder_tables():
    assert len(SCALE_TABLE) == 64 and SCALE_TABLE[0] == 451 and all(np.diff(SCALE_TABLE) > 0)
    assert 0.11 < SCALE_TABLE[0] / 4096 < 0.111 and 250 < SCALE_TABLE[-1] / 4096 < 260
    tables = scale_tables()
    for t, table in zip(SCALE_TABLE, tables):
        scale = t / 4096
        assert (table.freq.sum(1) == 1 << 16).all() and (table.freq >= 1).all()
        half = -int(table.low[0])
        assert table.freq.shape == (1, 2 * half + 2)  # -half .. half and the escape
        assert 0.5 * math.erfc((half + 0.5) / (scale * math.sqrt(2))) <= TAIL_MASS
        assert 0.5 * math.erfc((half - 0.5) / (scale * math.sqrt(2))) > TAIL_MASS
    # The tables as this version built them: a machine whose erfc differs would refuse every file (their checksum is
    # in it), and fails here first.
    assert entropy_coding.tables_checksum(tables) == 0xC6B6F834


def test_the_integer_hyper_decoder_gives_the_float_one_s_indices_whatever_the_threads():
    model = hyperprior(channels=8, code_dim=8)
    with torch.no_grad():  # scales spread over the table, as a trained model's
        for layer in model.hyper_synthesis:
            if isinstance(layer, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                layer.weight.normal_(0, 0.3)
                layer.bias.uniform_(0, 2)
    model.eval()
    z = torch.from_numpy(np.random.default_rng(0).integers(-6, 7, (1, 8, 5, 7)))
    h, w = 19, 27
    indices = model.scale_indices(z[0].numpy(), h, w)
    assert indices.shape == (8, h, w) and indices.dtype == np.int64
    assert len(np.unique(indices)) > 10
    floats = torch.bucketize(model._scales(z.float(), (h, w)), model.scales)[0].numpy()
    assert np.mean(indices == floats) > 0.98 and np.abs(indices - floats).max() <= 1
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert np.array_equal(model.scale_indices(z[0].numpy(), h, w), indices)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(
    "shape, options, match",
    [
        ((64,), {}, "the hyperprior codes images"),
        ((3, 16, 16), {"channels": 700}, "--channels 700 must be 1 to 655"),
        ((3, 16, 16), {"channels": 0}, "--channels 0 must be 1 to 655"),
        ((3, 16, 16), {"rate_lambda": -1.0}, "--rate-lambda -1.0 must be a finite number >= 0"),
    ],
)
def test_bad_options_are_refused_in_one_line(shape, options, match):
    with pytest.raises(AekitError, match=match) as error:
        model_config("hyperprior", shape, **{"code_dim": 4, **options})
    assert "\n" not in str(error.value)


def test_it_never_standardizes_what_it_codes_at_any_size():
    assert not model_config("hyperprior", (3, 16, 16), code_dim=4, likelihood="gaussian", standardize=True).standardize


def test_an_image_past_the_pixels_it_codes_whole_is_refused(monkeypatch):
    from aekit.models import hyperprior as module

    monkeypatch.setattr(module, "MAX_PIXELS", 40 * 40)
    model = hyperprior().eval()
    assert model.map_symbols(torch.rand(1, 3, 40, 40)).shape[-2:] == (3, 3)
    with pytest.raises(DataError, match="an image of 40x41 pixels is more than the 1600 this model codes whole"):
        model.map_symbols(torch.rand(1, 3, 40, 41))


def test_scikit_learn_says_what_the_hyperprior_is_for():
    from aekit.sklearn import ParameterError, estimator

    with pytest.raises(ParameterError, match="hyperprior codes photos of any size rather than rows; train it with"):
        estimator("hyperprior")
    with pytest.raises(ParameterError, match="red restores images of any size rather than coding rows"):
        estimator("red")


def test_the_scale_s_lower_bound_passes_no_gradient_that_would_push_it_further_below():
    """Balle's lower bound: below it, only a gradient that raises the scale passes, so that training does not drive
    scales under the last ReLU's zero, whence none could rise for the values that need a larger one."""
    bound = torch.tensor(0.11)
    x = torch.tensor([0.05, 0.05, 0.2, 0.2], requires_grad=True)
    out = LowerBound.apply(x, bound)
    assert torch.equal(out.detach(), torch.tensor([0.11, 0.11, 0.2, 0.2]))
    (out * torch.tensor([1.0, -1.0, 1.0, -1.0])).sum().backward()  # a step against +1 lowers x, against -1 raises it
    assert torch.equal(x.grad, torch.tensor([0.0, -1.0, 1.0, -1.0]))
