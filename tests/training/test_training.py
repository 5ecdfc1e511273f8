import copy
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from helpers import assert_refused, photo_folder, run_cli
from safetensors.torch import load_file
from test_cli import FAST

import aekit
from aekit.errors import AekitError, TrainingDiverged
from aekit.evaluation import evaluate
from aekit.evaluation.measures import reconstruction_metrics
from aekit.jobs.workflow import train_run
from aekit.models import FAMILIES, build_model, model_config
from aekit.training import run_folder, settings
from aekit.training.trainer import TrainSettings, _step_function, learning_rate_factor, mean_loss, train


def _model(name, dataset, **options):
    torch.manual_seed(0)
    networks = {} if name == "pca" else {"hidden": (64, 32)}
    return build_model(model_config(name, dataset.shape, code_dim=8, **networks, **options))


# The families with networks (red has no --hidden: tests/models/test_restoration.py trains it).
@pytest.mark.parametrize("name", [name for name, config in FAMILIES.items() if "net" in config.types()])
def test_each_model_test_loss_falls_on_digits(name, digits):
    model = _model(name, digits)
    x_test = torch.from_numpy(digits.x_test)
    before = mean_loss(model, x_test)["reconstruction"]
    history = train(model, digits, TrainSettings(epochs=4, batch_size=64), device="cpu", progress=False)
    after = mean_loss(model, x_test)["reconstruction"]
    assert len(history) == 4
    assert after < 0.8 * before
    assert history[-1]["test_loss"] < history[0]["test_loss"]


def test_autoencoder_beats_pca_at_the_same_code_size(digits):
    pca = _model("pca", digits)
    train(pca, digits, device="cpu", progress=False)
    torch.manual_seed(0)
    ae = build_model(model_config("ae", digits.shape, code_dim=8))
    train(ae, digits, TrainSettings(epochs=40, batch_size=64), device="cpu", progress=False)
    pca_sse = reconstruction_metrics(pca, digits.x_test)["sse_per_example"]
    ae_sse = reconstruction_metrics(ae, digits.x_test)["sse_per_example"]
    assert ae_sse < pca_sse, (ae_sse, pca_sse)


def test_metrics_have_the_design_names_and_agree_with_a_direct_computation(digits):
    model = _model("vae", digits)
    train(model, digits, TrainSettings(epochs=2), device="cpu", progress=False)
    metrics = evaluate(model, digits)
    assert set(metrics) == {"sse_per_example", "mse", "bce_per_example", "neg_elbo", "knn_accuracy", "logreg_accuracy"}
    x = torch.from_numpy(digits.x_test)
    with torch.no_grad():
        reconstruction = model.reconstruct(x)
    sse = (reconstruction - x).pow(2).flatten(1).sum(1).mean().item()
    assert metrics["sse_per_example"] == pytest.approx(sse, rel=1e-4)
    assert metrics["mse"] == pytest.approx(sse / 64, rel=1e-4)
    assert 0.1 < metrics["knn_accuracy"] <= 1


def test_checkpoint_round_trip_gives_identical_outputs(digits, tmp_path):
    for name in ("vae", "pca", "aae"):
        model = _model(name, digits)
        out = tmp_path / name
        out.mkdir()
        train(model, digits, TrainSettings(epochs=1), out=out, device="cpu", progress=False)
        run_folder.write_json(out / run_folder.CONFIG, {"model": model.config.to_dict()})
        loaded = aekit.load(out)
        assert not loaded.training
        x = digits.x_test[:16]
        np.testing.assert_array_equal(loaded.reconstruct(x), model.reconstruct(x))
        np.testing.assert_array_equal(loaded.encode(x), model.encode(x))


@pytest.mark.parametrize("name", ["vae", "aae", "dropout-ae", "dae"])
def test_interrupted_run_resumed_equals_an_uninterrupted_one(name, digits, tmp_path):
    # 12 steps an epoch: the warm-up's 20 steps go on after the resume.
    settings = TrainSettings(epochs=3, batch_size=128, seed=3, schedule="cosine", warmup_steps=20)
    straight = _model(name, digits)
    (tmp_path / "straight").mkdir()
    train(straight, digits, settings, out=tmp_path / "straight", device="cpu", progress=False)

    def stop_after_first_epoch(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    (tmp_path / "interrupted").mkdir()
    with pytest.raises(KeyboardInterrupt):
        train(
            _model(name, digits),
            digits,
            settings,
            out=tmp_path / "interrupted",
            device="cpu",
            progress=False,
            on_epoch_end=stop_after_first_epoch,
        )
    torch.manual_seed(12345)  # the resumed process starts from another random state; the checkpoint must restore it
    resumed = _model(name, digits)
    history = train(resumed, digits, settings, out=tmp_path / "interrupted", device="cpu", progress=False, resume=True)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert (
        load_file(tmp_path / "straight" / run_folder.WEIGHTS).keys()
        == load_file(tmp_path / "interrupted" / run_folder.WEIGHTS).keys()
    )


class _MemorySink:
    """A RunSink that keeps in memory, in order, what the trainer hands it."""

    name = "memory"

    def __init__(self):
        self.calls, self.states = [], []

    def checkpoint(self, state):
        self.states.append(copy.deepcopy(state))
        self.calls.append(("checkpoint", len(state["history"])))

    def epochs(self, history, model):
        self.calls.append(("epochs", [r["epoch"] for r in history], model is not None))

    def restore(self):
        return self.states[-1]

    def last_checkpoint(self):
        return "the checkpoint in memory" if self.states else None


def test_the_trainer_hands_epochs_and_checkpoints_to_its_sink_and_writes_no_file(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = TrainSettings(epochs=3, batch_size=128, seed=3)
    straight = _model("ae", digits)
    train(straight, digits, settings, device="cpu", progress=False)

    def stop_at_2(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    sink = _MemorySink()
    with pytest.raises(KeyboardInterrupt):
        train(_model("ae", digits), digits, settings, out=sink, device="cpu", progress=False, on_epoch_end=stop_at_2)
    assert sink.calls == [("checkpoint", 1), ("epochs", [1], True), ("checkpoint", 2), ("epochs", [1, 2], True)]
    resumed = _model("ae", digits)
    history = train(resumed, digits, settings, out=sink, device="cpu", progress=False, resume=True)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    # The resume hands the restored epochs over again (the run may have failed between checkpoint and epochs).
    assert sink.calls[4:] == [("epochs", [1, 2], True), ("checkpoint", 3), ("epochs", [1, 2, 3], True)]
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    train(_model("pca", digits), digits, out=sink, device="cpu", progress=False)
    assert sink.calls[-1] == ("epochs", [1], True)  # a closed-form fit: no checkpoint
    assert list(tmp_path.iterdir()) == []


class _PoisonedAE(torch.nn.Module):
    """Wraps a model so that its loss turns NaN at a chosen call."""

    def __init__(self, inner, poison_at):
        super().__init__()
        self.inner, self.poison_at, self.calls = inner, poison_at, 0

    def phases(self):
        phase = self.inner.phases()[0]
        original = phase.loss

        def loss(x):
            self.calls += 1
            result = original(x)
            if self.calls >= self.poison_at:
                return result._replace(total=result.total * float("nan"))
            return result

        phase.loss = loss
        return [phase]

    def loss(self, x):
        return self.inner.loss(x)


def test_nan_loss_stops_with_the_step_named_and_the_last_good_checkpoint_kept(digits, tmp_path):
    inner = _model("ae", digits)
    model = _PoisonedAE(inner, poison_at=23 + 5)  # 1437 examples / 64 per batch = 23 steps per epoch
    with pytest.raises(TrainingDiverged, match=r"step 5 of epoch 2.*last good checkpoint"):
        train(
            model,
            digits,
            TrainSettings(epochs=3, batch_size=64, log_every=10),
            out=tmp_path,
            device="cpu",
            progress=False,
        )
    checkpoint = run_folder.load_checkpoint(tmp_path / run_folder.CHECKPOINT)
    assert [r["epoch"] for r in checkpoint["history"]] == [1]
    weights = load_file(tmp_path / run_folder.WEIGHTS)
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_the_mean_test_loss_builds_no_autograd_graph(digits):
    # With a graph, the sum over batches would keep every batch's activations alive: memory grows with the test set.
    from aekit.training.trainer import mean_loss

    model = _model("vae", digits)
    seen = []
    model.register_forward_hook(lambda module, inputs, output: seen.append(torch.is_grad_enabled()))
    model.decoder.register_forward_hook(lambda module, inputs, output: seen.append(output.requires_grad))
    assert mean_loss(model, digits.x_test, batch_size=100)["loss"] > 0
    assert seen and not any(seen)


def test_a_model_too_large_to_train_is_refused_naming_its_sizes_and_the_memory_before_allocating(capsys, tmp_path):
    out = tmp_path / "run"
    message = (
        "--hidden 1000000,1000000 and --code-dim 10 make a model of 2,000,152,000,074 parameters, 29,804.6 GiB of "
        "float32 on cpu to train it (weights, gradients and Adam's two moments), more than the"
    )
    for hidden, match in (("1000000,1000000", message), (str(10**20), "larger than PyTorch can hold")):
        assert_refused(capsys, tmp_path, "train", "--hidden", hidden, "--device", "cpu", "--out", str(out), match=match)
    assert not out.exists()


def test_a_restoration_model_too_large_to_train_is_refused_naming_its_own_sizes(capsys, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--model", "red", "--dataset", str(photo_folder(tmp_path / "photos")), "--patch", "8"]
    assert_refused(
        capsys,
        tmp_path,
        *argv,
        "--width",
        "100000",
        "--device",
        "cpu",
        "--out",
        str(out),
        match="--width 100000 and --levels 2 and --blocks 2 make a model of 860,002,700,001 parameters",
    )
    assert not out.exists()


@pytest.mark.parametrize("model", ["ae", "pca"])
def test_the_end_of_a_run_does_not_fail_on_one_class_few_examples_or_one_test_example(model, tmp_path):
    """The probes need two classes and five training examples, the codes' plane two test examples: a run without
    them is finished without the probes, its codes drawn by their first two values, where before it failed after
    training."""
    rng = np.random.default_rng(0)
    for name, y_train, x_test, y_test in (
        ("one-class", np.zeros(30, np.int64), rng.uniform(size=(6, 1, 8, 8)), np.zeros(6, np.int64)),
        ("few", np.arange(4) % 2, rng.uniform(size=(3, 1, 8, 8)), np.arange(3) % 2),
        ("one-test", np.arange(30) % 2, rng.uniform(size=(1, 1, 8, 8)), np.zeros(1, np.int64)),
    ):
        data = tmp_path / f"{name}.npz"
        x_train = rng.uniform(size=(len(y_train), 1, 8, 8))
        np.savez(
            data, x_train=x_train.astype(np.float32), y_train=y_train, x_test=x_test.astype(np.float32), y_test=y_test
        )
        options = {
            "dataset": str(data),
            "model": model,
            "code_dim": 3,
            "epochs": 1,
            **({} if model == "pca" else {"hidden": [8]}),
        }
        _, metrics = train_run(tmp_path / name / model, options, progress=False, device="cpu")
        assert ("knn_accuracy" in metrics) == (name == "one-test"), name
        assert (tmp_path / name / model / "figures" / "codes.png").is_file()


# ---------------------------------------------------------------- run options, declared once


@dataclasses.dataclass(frozen=True)
class _WithWeightDecay(settings.TrainSettings):
    """The trainer's settings with a training option aekit does not have, declared as every run option is."""

    weight_decay: float = settings.option(
        0.0, "L2 penalty on the weights", group=settings.TRAINING, positive=True, sklearn="weight_decay"
    )


def test_a_training_option_declared_once_is_a_flag_a_saved_option_a_parameter_and_resume_rule(
    capsys, tmp_path, monkeypatch
):
    # Nothing but the declaration: aekit/cli/flags.py, workflow.py and aekit/sklearn/ learn of the option from it.
    from aekit.cli import build_parser
    from aekit.jobs import workflow
    from aekit.sklearn import autoencoders, base

    monkeypatch.setattr(settings, "TrainSettings", _WithWeightDecay)
    handed = []  # the settings the trainer is given, by aekit train and by an estimator's fit

    def recording(real):
        return lambda model, data, given, **how: handed.append(given) or real(model, data, given, **how)

    for module in (workflow, base):  # every estimator trains through aekit.sklearn.base
        monkeypatch.setattr(module, "train", recording(module.train))

    assert settings.defaults()["weight_decay"] == 0.0
    shown = " ".join(run_cli(capsys, "train", "--help")[1].split())
    assert "[--weight-decay WEIGHT_DECAY]" in shown
    assert "--weight-decay WEIGHT_DECAY L2 penalty on the weights (default: 0.0)" in shown
    assert build_parser().parse_args(["compare", "--out", "x", "--weight-decay", "0.5"]).weight_decay == 0.5

    out = tmp_path / "run"
    assert run_cli(capsys, "train", "--out", str(out), "--weight-decay", "0.5", *FAST)[0] == 0
    assert json.loads((out / run_folder.CONFIG).read_text())["options"]["weight_decay"] == 0.5
    assert handed[-1].weight_decay == 0.5
    assert_refused(capsys, out, "train", "--resume", "--out", str(out), "--weight-decay", "0.1", match="weight_decay")
    assert_refused(
        capsys,
        tmp_path / "bad",
        "train",
        "--out",
        str(tmp_path / "bad"),
        "--weight-decay",
        "-1",
        *FAST,
        match="--weight-decay -1.0 must be a positive number",
    )

    class Probe(autoencoders._BaseAutoEncoder):
        _model = "ae"

    assert Probe().get_params()["weight_decay"] == 0.0
    Probe(hidden_layer_sizes=(8,), max_iter=1, weight_decay=0.25, random_state=0).fit(np.random.rand(40, 5))
    assert handed[-1].weight_decay == 0.25


def test_the_learning_rate_rises_over_the_warm_up_then_follows_its_schedule():
    assert [learning_rate_factor(s, 10, "constant", 4) for s in range(6)] == [0.25, 0.5, 0.75, 1, 1, 1]
    cosine = [(1 + math.cos(math.pi * s / 10)) / 2 for s in range(11)]
    assert [learning_rate_factor(s, 10, "cosine") for s in range(11)] == pytest.approx(cosine)
    warmed = [learning_rate_factor(s, 10, "cosine", 4) for s in range(11)]
    assert warmed == pytest.approx([c * min(1, (s + 1) / 4) for s, c in enumerate(cosine)])


def test_a_warm_up_is_applied_to_the_steps(digits):
    # A warm-up far longer than the run keeps every step's learning rate near 0: the weights barely move.
    losses = []
    for warmup in (0, 10**6):
        history = train(_model("ae", digits), digits, TrainSettings(epochs=2, lr=0.01, warmup_steps=warmup),
                        device="cpu", progress=False)  # fmt: skip
        losses.append(history[-1]["test_loss"])
    untrained = mean_loss(_model("ae", digits), digits.x_test)["loss"]
    assert losses[0] < 0.9 * untrained and losses[1] == pytest.approx(untrained, rel=0.01)


@pytest.mark.parametrize("clip", [0.0, 0.5])
def test_a_step_s_gradient_is_clipped_to_the_norm_asked(clip, digits):
    model = _model("ae", digits)
    norms = []

    class Recorder(torch.optim.SGD):  # the gradient as the optimizer gets it
        def step(self, closure=None):
            norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item())

    phases = model.phases()
    step = _step_function(phases, [Recorder(phases[0].parameters, 0.1)], TrainSettings(clip_grad_norm=clip),
                          torch.device("cpu"), 1)  # fmt: skip
    step(torch.from_numpy(digits.x_train[:64]).float())
    assert norms[0] == pytest.approx(clip, rel=1e-4) if clip else norms[0] > 1  # unclipped: well above 0.5


def test_a_choice_is_checked_from_its_declaration():
    with pytest.raises(AekitError, match=r"^unknown --schedule 'warm'; use constant or cosine$"):
        TrainSettings(schedule="warm")
    with pytest.raises(AekitError, match=r"^unknown --data-on 'disk'; use auto, device or stream$"):
        TrainSettings(data_on="disk")
