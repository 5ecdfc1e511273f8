"""The VQ-VAE (aekit.models.vqvae): its quantizer (straight-through gradient, moving-average codebook, restarts of
dead codewords), its training and its trip through the run folder, the command line and scikit-learn."""

import json

import numpy as np
import pytest
import torch

import aekit
from aekit.cli import main
from aekit.errors import AekitError, DataError
from aekit.jobs.workflow import train_run
from aekit.models import build_model, model_config
from aekit.models.inference import in_batches
from aekit.models.vqvae import VQVAE, VectorQuantizer
from aekit.sklearn import estimator

SMALL = {"code_dim": 4, "embedding_dim": 2, "codebook_size": 16, "hidden": (32,)}


def _quantizer(codebook, counts, decay=0.5, restart_below=0.0) -> VectorQuantizer:
    codebook = torch.tensor(codebook, dtype=torch.float32)
    quantizer = VectorQuantizer(len(codebook), codebook.shape[1], decay, restart_below)
    quantizer.codebook.copy_(codebook)
    quantizer.ema_count.copy_(torch.tensor(counts, dtype=torch.float32))
    quantizer.ema_sum.copy_(codebook * quantizer.ema_count[:, None])
    return quantizer


def _update(quantizer: VectorQuantizer, vectors) -> torch.Tensor:
    z = torch.tensor(vectors, dtype=torch.float32).reshape(1, -1)
    indices = quantizer.nearest(z)
    quantizer.update(z, indices)
    return indices


def test_the_straight_through_gradient_passes_unchanged_to_the_code():
    quantizer = _quantizer([[0.0, 0.0], [1.0, 1.0], [-2.0, 3.0]], [1, 1, 1])
    z = torch.tensor([[0.2, -0.1, 0.9, 1.4, -1.0, 2.0]], requires_grad=True)
    out = quantizer(z)
    assert torch.equal(out.detach(), torch.tensor([[0.0, 0.0, 1.0, 1.0, -2.0, 3.0]]))
    weights = torch.randn_like(z)
    (out * weights).sum().backward()
    assert torch.equal(z.grad, weights)
    assert torch.equal(quantizer(z.detach()), out.detach())  # without gradients: the codewords exactly


def test_the_reconstruction_gradient_reaches_the_encoder(digits):
    torch.manual_seed(0)
    model = build_model(model_config("vqvae", digits.shape, commitment=0.0, **SMALL)).eval()
    model.loss(torch.from_numpy(digits.x_test[:64])).total.backward()
    encoder_grads = [p.grad for p in model.encoder[0].parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in encoder_grads)
    assert not any(b.requires_grad for b in model.quantizer.buffers())  # the codebook learns by moving averages


def test_the_moving_averages_move_each_codeword_toward_the_mean_of_its_vectors():
    quantizer = _quantizer([[0.0, 0.0], [10.0, 10.0]], [1.0, 1.0], decay=0.5)
    indices = _update(quantizer, [[1.0, 1.0], [3.0, 3.0], [9.0, 9.0]])
    assert indices.tolist() == [[0, 0, 1]]
    count = torch.tensor([0.5 * 1 + 0.5 * 2, 0.5 * 1 + 0.5 * 1])
    sums = torch.tensor([[0.5 * 0 + 0.5 * 4] * 2, [0.5 * 10 + 0.5 * 9] * 2])
    total, eps = count.sum(), quantizer.epsilon
    smoothed = (count + eps) / (total + 2 * eps) * total
    assert torch.allclose(quantizer.ema_count, count) and torch.allclose(quantizer.ema_sum, sums)
    assert torch.allclose(quantizer.codebook, sums / smoothed[:, None], rtol=1e-6)
    # Codeword 0 went from 0 toward its vectors' mean 2 (to 4/3), codeword 1 from 10 toward 9 (to 9.5).
    assert torch.allclose(quantizer.codebook[:, 0], torch.tensor([4 / 3, 9.5]), rtol=1e-4)
    # With no memory (decay 0) each codeword is the mean of its vectors.
    quantizer = _quantizer([[0.0, 0.0], [10.0, 10.0]], [1.0, 1.0], decay=0.0)
    _update(quantizer, [[1.0, 1.0], [3.0, 3.0], [9.0, 9.0]])
    assert torch.allclose(quantizer.codebook, torch.tensor([[2.0, 2.0], [9.0, 9.0]]), rtol=1e-4)


def test_a_dead_codeword_is_restarted_on_a_vector_of_the_batch():
    # 4 codewords of 1 value; 8 vectors make an even share of 2 each, so with restart_below 0.5 the threshold is 1.
    quantizer = _quantizer([[0.0], [1.0], [2.0], [50.0]], [3.0, 3.0, 3.0, 0.5], decay=0.9, restart_below=0.5)
    batch = [0.1, 0.2, 0.9, 1.1, 1.2, 1.9, 2.1, 2.2]
    _update(quantizer, batch)
    codebook = quantizer.codebook[:, 0]
    assert codebook[3].item() in torch.tensor(batch).tolist()  # moved from 50 onto one of the batch's vectors
    assert quantizer.ema_count[3].item() == pytest.approx(1.0) and quantizer.ema_sum[3, 0] == codebook[3]
    assert torch.allclose(codebook[:3], torch.tensor([0.15, 1.1, 2.0667]), atol=0.15)  # the live ones stay


def test_the_first_training_step_places_every_codeword_on_the_data(digits):
    torch.manual_seed(0)
    model = build_model(model_config("vqvae", digits.shape, **SMALL)).train()
    x = torch.from_numpy(digits.x_train[:64])
    model.loss(x)
    vectors = model.encoder[0](x).detach().reshape(-1, 2)
    assert all(torch.isclose(vectors, word, atol=1e-6).all(1).any() for word in model.quantizer.codebook)


@pytest.fixture(scope="module")
def run(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("vqvae") / "run"
    options = {"model": "vqvae", "epochs": 8, "batch_size": 64, **SMALL}
    model, metrics = train_run(out, options, device="cpu", progress=False)
    return out, model, metrics


def test_the_loss_falls_and_the_codebook_is_used(run):
    out, _, metrics = run
    history = [line.split(",") for line in (out / "history.csv").read_text().splitlines()]
    losses = [float(row[history[0].index("test_loss")]) for row in history[1:]]
    assert losses[-1] < 0.8 * losses[0]
    assert 4 < metrics["codebook_perplexity"] <= 16


def test_a_trained_run_loads_with_its_codebook_and_gives_the_same_outputs(run, digits):
    out, model, _ = run
    loaded = aekit.load(out)
    assert isinstance(loaded, VQVAE) and loaded.codebook_size == 16 and loaded.config == model.config
    assert torch.equal(loaded.quantizer.codebook, model.quantizer.codebook)
    x = digits.x_test[:50]
    indices = loaded.code_indices(x)
    assert indices.dtype == np.int64 and indices.shape == (50, 2)
    assert np.array_equal(indices, model.code_indices(x))
    assert np.array_equal(loaded.reconstruct(x), model.reconstruct(x))
    # The code is the indices' codewords, and decoding the indices is the reconstruction, exactly.
    codes = loaded.encode(x)
    assert np.array_equal(codes, loaded.quantizer.codebook[torch.from_numpy(indices)].reshape(50, 4).numpy())
    assert np.array_equal(loaded.decode_indices(indices), loaded.reconstruct(x))
    # Also through the batching helper that the apps use (which hands the indices over as float batches).
    assert np.array_equal(in_batches(loaded, "code_indices", x, 16), indices)
    # Compared at one batch size: float kernels may round a batch of 16 and one of 50 differently.
    assert np.array_equal(in_batches(loaded, "decode_indices", indices, 16), in_batches(loaded, "reconstruct", x, 16))
    config = json.loads((out / "config.json").read_text())["model"]
    assert config["model"] == "vqvae" and config["codebook_size"] == 16 and "beta" not in config


def test_decode_indices_checks_numpy_input(run):
    model = aekit.load(run[0])
    with pytest.raises(DataError, match=r"takes integers \(n, 2\)"):
        model.decode_indices(np.zeros((3, 4), np.int64))
    with pytest.raises(DataError, match="from 0 to 15"):
        model.decode_indices(np.array([[0, 16]]))


def test_a_resumed_training_ends_with_the_codebook_of_an_uninterrupted_one(tmp_path):
    options = {"model": "vqvae", "batch_size": 64, **SMALL}
    whole, _ = train_run(tmp_path / "whole", {**options, "epochs": 2}, device="cpu", progress=False)
    train_run(tmp_path / "halves", {**options, "epochs": 1}, device="cpu", progress=False)
    resumed, _ = train_run(tmp_path / "halves", {"epochs": 2}, resume=True, device="cpu", progress=False)
    for name, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_the_command_line_trains_and_evaluates_it(tmp_path, capsys):
    out = tmp_path / "cli"
    flags = ["--code-dim", "4", "--embedding-dim", "2", "--codebook-size", "8", "--hidden", "32"]
    assert main(["train", "--model", "vqvae", *flags, "--epochs", "2", "--out", str(out), "--no-progress"]) == 0
    assert main(["train", "--resume", "--out", str(out), "--epochs", "3", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["epochs"] == 3 and 1 <= metrics["codebook_perplexity"] <= 8
    assert metrics["sse_per_example"] > 0 and "knn_accuracy" in metrics


def test_a_code_size_the_codewords_do_not_divide_is_refused():
    with pytest.raises(AekitError, match="--embedding-dim 3 must divide --code-dim 10"):
        model_config("vqvae", (64,), embedding_dim=3)
    with pytest.raises(AekitError, match="--codebook-size 1 must be from 2"):
        model_config("vqvae", (64,), codebook_size=1)


def test_the_scikit_learn_estimator_fits_and_transforms(digits):
    x = digits.x_train.reshape(len(digits.x_train), -1)[:400].astype(np.float64)
    vq = estimator("vqvae")(
        n_components=4, embedding_dim=2, codebook_size=8, hidden_layer_sizes=(32,), max_iter=3, random_state=0
    )
    codes = vq.fit_transform(x)
    assert codes.shape == (400, 4) and vq.model_.codebook_size == 8
    codebook = vq.model_.quantizer.codebook.double().numpy()
    pairs = codes.reshape(-1, 2)
    assert np.abs(pairs[:, None] - codebook[None]).sum(-1).min(1).max() < 1e-6  # every vector is a codeword
    assert vq.inverse_transform(codes).shape == x.shape and np.isfinite(vq.score(x))
