import json
import math
import re

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from aekit.errors import AekitError, DataError
from aekit.models import (
    FAMILIES,
    PCA,
    VAE,
    AdversarialAE,
    build_model,
    choose_likelihood,
    config_from_dict,
    corrupt,
    gaussian_kl,
    model_config,
)
from aekit.models.aae import sample_prior


def test_kl_to_standard_normal_matches_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = torch.randn(64, 7), torch.randn(64, 7)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected)


def test_general_two_gaussian_kl_matches_torch_and_monte_carlo():
    torch.manual_seed(1)
    m1, m2 = torch.tensor([0.3, -1.0, 2.0]), torch.tensor([-0.5, 0.2, 1.0])
    s1, s2 = torch.tensor([0.5, 1.5, 0.8]), torch.tensor([1.2, 0.7, 2.0])
    kl = gaussian_kl(m1, 2 * s1.log(), m2, 2 * s2.log())
    closed = (torch.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5).sum()
    torch.testing.assert_close(kl, closed)
    torch.testing.assert_close(kl, kl_divergence(Normal(m1, s1), Normal(m2, s2)).sum())
    q, p = Normal(m1, s1), Normal(m2, s2)
    z = q.sample((400_000,))
    monte_carlo = (q.log_prob(z) - p.log_prob(z)).sum(-1).mean()
    assert abs(monte_carlo.item() - kl.item()) < 0.02 * kl.item() + 0.01


def test_reparameterization_lets_gradients_reach_mean_and_log_variance():
    torch.manual_seed(0)
    model = build_model(model_config("vae", (6,), code_dim=3, likelihood="gaussian", hidden=(8,)))
    x = torch.randn(16, 6)
    mu, logvar = model.posterior(x)
    mu.retain_grad()
    logvar.retain_grad()
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    (model.likelihood.nll(model.decoder(z), x).mean()).backward()
    assert mu.grad.abs().sum() > 0 and logvar.grad.abs().sum() > 0
    model.zero_grad()
    model.loss(x).total.backward()
    last_encoder_layer = model.encoder[-1].weight.grad
    assert last_encoder_layer[:3].abs().sum() > 0 and last_encoder_layer[3:].abs().sum() > 0


def test_vae_loss_is_reconstruction_plus_beta_kl():
    torch.manual_seed(0)
    model = build_model(model_config("vae", (5,), code_dim=2, likelihood="gaussian", hidden=(4,), beta=0.25))
    loss = model.loss(torch.randn(8, 5))
    torch.testing.assert_close(loss.total, loss.parts["reconstruction"] + 0.25 * loss.parts["kl"])


def test_likelihoods_are_cross_entropy_and_squared_error():
    x = torch.tensor([[0.0, 1.0, 0.25]])
    out = torch.tensor([[0.5, -1.0, 2.0]])
    bce = build_model(model_config("ae", (3,), code_dim=2, likelihood="bernoulli", hidden=(2,))).likelihood
    p = torch.sigmoid(out)
    torch.testing.assert_close(bce.nll(out, x), -(x * p.log() + (1 - x) * (1 - p).log()).sum(1))
    torch.testing.assert_close(bce.mean(out), p)
    gaussian = build_model(model_config("ae", (3,), code_dim=2, likelihood="gaussian", hidden=(2,))).likelihood
    torch.testing.assert_close(gaussian.nll(out, x), ((out - x) ** 2).sum(1))
    torch.testing.assert_close(gaussian.mean(out), out)


def test_automatic_loss_choice_and_bce_outside_unit_interval_is_refused():
    assert choose_likelihood("auto", True, 0.0, 1.0) == "bernoulli"
    assert choose_likelihood("auto", False, -3.0, 5.0) == "gaussian"
    assert choose_likelihood("mse", True, 0.0, 1.0) == "gaussian"
    assert choose_likelihood("bce", False, 0.0, 1.0) == "bernoulli"
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        choose_likelihood("bce", False, -0.5, 1.0)


@pytest.mark.parametrize("kind", ["gaussian", "masking", "salt-and-pepper"])
def test_corruption_changes_the_expected_share_of_elements(kind):
    torch.manual_seed(0)
    x = torch.full((200, 50), 0.5)
    x[:, ::2] = 0.2
    noisy = corrupt(x, kind, 0.3)
    changed = (noisy != x).float().mean().item()
    if kind == "gaussian":
        assert changed == 1.0 and abs((noisy - x).std().item() - 0.3) < 0.01
    else:
        # salt-and-pepper sets a hit element to the min or max, which leaves some unchanged (0.2 or 0.5 already)
        expected = 0.3 if kind == "masking" else 0.3 * 0.5
        assert abs(changed - expected) < 0.02
        if kind == "masking":
            assert set(noisy[noisy != x].unique().tolist()) == {0.0}
        else:
            assert set(noisy[noisy != x].unique().tolist()) <= {x.min().item(), x.max().item()}


def test_denoising_ae_corrupts_only_while_training():
    torch.manual_seed(0)
    model = build_model(
        model_config("dae", (10,), likelihood="gaussian", hidden=(8,), noise="masking", noise_level=0.5)
    )
    x = torch.rand(32, 10)
    model.train()
    assert model.loss(x).total != model.loss(x).total  # a fresh corruption each call
    model.eval()
    torch.testing.assert_close(model.loss(x).total, model.loss(x).total)
    torch.testing.assert_close(model.loss(x).total, ((model(x) - x) ** 2).sum(1).mean())


def test_dropout_ae_drops_in_training_and_not_in_evaluation():
    torch.manual_seed(0)
    model = build_model(
        model_config("dropout-ae", (20,), likelihood="gaussian", hidden=(16,), dropout=0.5, input_dropout=0.3)
    )
    x = torch.rand(4, 20)
    model.train()
    assert not torch.equal(model.encode(x), model.encode(x))
    model.eval()
    assert torch.equal(model.encode(x), model.encode(x))
    assert sum(isinstance(m, torch.nn.Dropout) for m in model.modules()) >= 3  # input, encoder and decoder hidden


@pytest.mark.parametrize("prior", ["gaussian", "mixture", "uniform"])
def test_prior_samples_have_the_documented_distribution(prior):
    z = sample_prior(prior, 50_000, 3, "cpu", torch.Generator().manual_seed(0))
    if prior == "gaussian":
        assert z.mean(0).abs().max() < 0.03 and (z.std(0) - 1).abs().max() < 0.03
    elif prior == "uniform":
        assert z.min() >= -1 and z.max() <= 1 and (z.std(0) - 1 / math.sqrt(3)).abs().max() < 0.01
    else:
        radius = z[:, :2].norm(dim=1)
        assert abs(radius.mean().item() - 2.0) < 0.1 and z[:, 2].abs().mean() < 0.5
        angles = torch.atan2(z[:, 1], z[:, 0])
        assert len(np.unique(np.round((angles.numpy() % (2 * np.pi)) / (2 * np.pi / 10)) % 10)) == 10


def test_adversarial_phases_update_only_their_own_parameters():
    torch.manual_seed(0)
    model = build_model(
        model_config("aae", (6,), code_dim=2, likelihood="gaussian", hidden=(8,), discriminator_hidden=(8,))
    )
    assert isinstance(model, AdversarialAE)
    phases = {phase.name: phase for phase in model.phases()}
    assert list(phases) == ["reconstruction", "discriminator", "generator"]
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    assert ids(phases["discriminator"].parameters) == ids(model.discriminator.parameters())
    assert ids(phases["generator"].parameters) == ids(model.encoder.parameters())
    assert ids(phases["reconstruction"].parameters) == ids(model.encoder.parameters()) | ids(model.decoder.parameters())
    x = torch.randn(32, 6)
    # The discriminator loss must not reach the encoder (its codes are detached).
    model.zero_grad()
    phases["discriminator"].loss(x).total.backward()
    assert all(p.grad is None for p in model.encoder.parameters())


def test_pca_matches_scikit_learn():
    from sklearn.decomposition import PCA as SklearnPCA

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(200, 12)) @ rng.normal(size=(12, 12))).astype(np.float32)
    model = PCA((12,), 4).fit(x)
    reference = SklearnPCA(n_components=4, svd_solver="full").fit(x)
    np.testing.assert_allclose(np.abs(model.encode(x)), np.abs(reference.transform(x)), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(
        model.reconstruct(x), reference.inverse_transform(reference.transform(x)), rtol=1e-3, atol=1e-3
    )
    with pytest.raises(DataError, match="at most"):
        PCA((12,), 13).fit(x)


@pytest.mark.parametrize("net", ["mlp", "conv"])
@pytest.mark.parametrize(
    "model_name", [name for name, config in FAMILIES.items() if name == "pca" or "net" in config.types()]
)
def test_every_model_maps_any_image_shape_back_to_itself(model_name, net):
    shape = (3, 13, 10)
    networks = {"net": net, "hidden": (8, 4) if net == "conv" else (16,)} if model_name != "pca" else {}
    model = build_model(model_config(model_name, shape, code_dim=4, **networks))
    x = torch.rand(5, *shape)
    if model_name == "pca":
        model.fit(torch.rand(40, *shape).numpy())
    assert model.encode(x).shape == (5, 4)
    assert model.reconstruct(x).shape == x.shape
    assert isinstance(model.reconstruct(x.numpy()), np.ndarray)
    assert torch.isfinite(model.loss(x).total)


def test_model_spec_rejects_bad_settings_with_one_clear_message():
    with pytest.raises(AekitError, match="unknown model 'gan'"):
        model_config("gan", (4,))
    with pytest.raises(AekitError, match="^--code-dim 0 must be at least 1$"):
        model_config("ae", (4,), code_dim=0)
    with pytest.raises(AekitError, match=r"--noise-level 1.5 must be >= 0 \(and <= 1 for masking\)"):
        model_config("dae", (4,), noise="masking", noise_level=1.5)
    with pytest.raises(DataError, match="images"):
        build_model(model_config("ae", (64,), net="conv"))
    with pytest.raises(AekitError, match="^--beta is an option of vae, not of ae; drop it or use --model vae$"):
        model_config("ae", (4,), beta=2.0)
    spec = model_config("vae", (1, 8, 8), code_dim=3)
    assert config_from_dict(spec.to_dict()) == spec
    assert spec.to_dict() == {
        "model": "vae",
        **{"shape": [1, 8, 8], "likelihood": "bernoulli", "standardize": False, "code_dim": 3, "net": "mlp"},
        **{"hidden": [256, 128], "task": "reconstruct", "factor": 2, "binarize": False},
        **{"beta": 1.0, "objective": "elbo", "iw_samples": 50},
    }, "a VAE's config holds its own fields, not the other families'"


def test_a_config_takes_any_whole_number_as_a_plain_int_and_names_a_field_of_the_wrong_kind():
    spec = model_config("vae", (np.int64(64),), code_dim=np.int64(3), hidden=(np.int32(8),), iw_samples=np.int16(2))
    assert spec == model_config("vae", (64,), code_dim=3, hidden=(8,), iw_samples=2)
    assert json.loads(json.dumps(spec.to_dict()))["code_dim"] == 3  # plain ints: JSON takes them
    assert all(type(v) is int for v in (spec.code_dim, spec.iw_samples, *spec.hidden, *spec.shape))
    for field, value, message in (
        ("code_dim", "10", "--code-dim is '10' (a string); it must be a whole number"),
        ("code_dim", 2.0, "--code-dim is 2.0 (a decimal number); it must be a whole number"),
        ("hidden", (8, "4"), "--hidden is (8, '4') (a list); it must be a list of whole numbers"),
        ("beta", "1", "--beta is '1' (a string); it must be a number"),
        ("binarize", 1, "--binarize is 1 (a whole number); it must be true or false"),
    ):
        with pytest.raises(AekitError, match=f"^{re.escape(message)}$"):
            model_config("vae", (64,), **{field: value})


@pytest.mark.parametrize("shape", [(12,), (1, 3, 4)], ids=["flat", "image"])
@pytest.mark.parametrize("model_name", ["ae", "vae", "pca"])
def test_a_code_larger_than_one_example_is_refused_naming_both_sizes_and_the_fix(model_name, shape):
    with pytest.raises(AekitError, match=r"^[^;]*\b13\b[^;]*\b12\b[^;]*; set --code-dim to at most 12$"):
        model_config(model_name, shape, code_dim=13)
    spec = model_config(model_name, shape, code_dim=12)  # as large as the input: accepted, as PCA keeps all components
    model = build_model(spec)
    x = torch.rand(20, *shape)
    if model_name == "pca":
        model.fit(x.numpy())
    assert model.encode(x).shape == (20, 12) and model.reconstruct(x).shape == x.shape


def test_pca_refuses_more_components_than_features_as_every_family_does():
    with pytest.raises(
        AekitError, match="^PCA cannot keep 65 components of 64 features; set --code-dim to at most 64$"
    ):
        model_config("pca", (1, 8, 8), code_dim=65)
    with pytest.raises(AekitError, match="a code of 65 values is larger than the 64 values of one example"):
        model_config("dae", (1, 8, 8), code_dim=65)


def test_vae_samples_decode_prior_draws():
    model = build_model(model_config("vae", (1, 8, 8), code_dim=3))
    assert isinstance(model, VAE)
    samples = model.sample(7, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (7, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1


# --- outputs in the caller's layout ---------------------------------------------------------------------------------

LAYOUTS = {
    "model's": lambda x: x,
    "flat": lambda x: x.reshape(len(x), -1),
    "no channel": lambda x: x[:, 0],
    "channels last": lambda x: x.reshape(len(x), 1, 8, 8).swapaxes(1, 3).swapaxes(1, 2),
}


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("model_name", ["ae", "vae", "pca"])
def test_encode_and_reconstruct_answer_in_the_callers_layout_and_type(model_name, layout, kind):
    """Flat in, flat out; (n, 8, 8) in, (n, 8, 8) out; channels last in, channels last out; uint8 in, uint8 out
    (rounded intensities): numpy or torch, the same numbers as in the model's own layout."""
    model = build_model(model_config(model_name, (1, 8, 8), code_dim=3))
    pixels = np.random.default_rng(0).integers(0, 256, (6, 1, 8, 8), dtype=np.uint8)
    if model_name == "pca":
        model.fit(pixels / np.float32(255))
    intensities = pixels / np.float32(255)
    expected, expected_codes = model.reconstruct(intensities), model.encode(intensities)
    for given, wanted in ((pixels, np.round(np.clip(expected, 0, 1) * 255)), (intensities, expected)):
        x = LAYOUTS[layout](given)
        x = torch.from_numpy(np.ascontiguousarray(x)) if kind == "torch" else x
        out = model.reconstruct(x)
        assert type(out) is type(x) and tuple(out.shape) == tuple(x.shape) and out.dtype == x.dtype
        # 8-bit pixels: one level apart at most (a rounding on either side of .5).
        tolerance = 1 if given.dtype == np.uint8 else 1e-6
        np.testing.assert_allclose(torch.as_tensor(out).detach().numpy(), LAYOUTS[layout](wanted), atol=tolerance)
        codes = torch.as_tensor(model.encode(x)).detach().numpy()
        np.testing.assert_allclose(codes, expected_codes, rtol=1e-5, atol=1e-6)
    assert tuple(model.decode(np.zeros((2, 3), np.float32)).shape) == (2, 1, 8, 8)  # codes carry no layout


def test_a_float_tensor_in_another_layout_keeps_its_gradient_and_a_wrong_size_is_one_line():
    model = build_model(model_config("ae", (1, 8, 8), code_dim=3))
    x = torch.rand(4, 64, requires_grad=True)
    model.reconstruct(x).sum().backward()
    assert x.grad is not None and x.grad.shape == (4, 64)
    with pytest.raises(DataError, match="examples of size 63 values but the model takes 8x8"):
        model.reconstruct(torch.rand(4, 63))
