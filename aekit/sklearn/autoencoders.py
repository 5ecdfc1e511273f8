"""scikit-learn estimators for the auto-encoder family: a drop-in beside ``sklearn.decomposition.PCA``.

``VariationalAutoEncoder(n_components=2).fit_transform(X)`` builds the model ``aekit train --model vae`` builds and
trains it with the same trainer on the rows of X. Every estimator has ``fit``, ``transform`` (the code; the posterior
mean for the VAE), ``inverse_transform`` (the decoder's mean, in the units of X), ``fit_transform``, ``score``
(an average log-likelihood in nats, like PCA's; a lower bound on it for the VAE), ``get_feature_names_out`` and
``set_output``.

The loss: ``loss='auto'`` takes the cross-entropy (Bernoulli likelihood, sigmoid output) when every training value
lies in [0, 1] and the sum of squared differences (Gaussian likelihood, linear output) otherwise; ``loss_`` records
the choice. Under the squared error the data is standardized inside (``standardize=True``) so that every feature
counts alike; ``inverse_transform`` undoes it.

Each has an outlier detector beside it (``AutoEncoderOutlierDetector``, ...; :func:`outlier_detector`): the same
estimator with scikit-learn's ``OutlierMixin`` API, ``score_samples`` being minus each row's anomaly score
(:mod:`aekit.evaluation.anomaly`) and ``predict`` -1 for the rows below ``offset_`` (see :class:`_OutlierDetection`).
"""

from __future__ import annotations

import copy
import math
import numbers

import numpy as np
import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin, OutlierMixin, TransformerMixin, clone
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from aekit.data import Dataset
from aekit.errors import AekitError
from aekit.evaluation.anomaly import (
    RECONSTRUCTION,
    SAMPLES,
    SCORES,
    anomaly_scores,
    errors_and_codes,
    reconstruction_nll,
)
from aekit.models import ModelConfig, NetConfig, choose_likelihood, gaussian_kl, model_config
from aekit.models.base import device_of
from aekit.models.config import FAMILIES, family, register
from aekit.models.inference import batches, evaluating
from aekit.models.likelihood import LOSS_TO_LIKELIHOOD
from aekit.naming import speaking
from aekit.sklearn.base import (
    ParameterError,
    TorchEstimator,
    family_parameters,
    fitted,
    in_own_words,
    init_storing,
    parameter_doc,
    training_parameters,
    whole,
)
from aekit.training.settings import ROWS, train_settings
from aekit.training.trainer import check_model_fits, resolve_device

# The model's hyper-parameters that every estimator takes, with the estimators' defaults; each family adds its own
# options (those of its config beyond the networks' shared ones: see :func:`aekit.sklearn.base.family_parameters`).
MODEL = {"n_components": 2, "hidden_layer_sizes": (256, 128)}
LIKELIHOOD_TO_LOSS = {likelihood: loss for loss, likelihood in LOSS_TO_LIKELIHOOD.items()}
# How fit holds rows out to choose the epoch to keep (the estimators' own, no run option).
HOLD_OUT = {"validation_fraction": None, "early_stopping": False}

# The outlier detectors' sizes and training length, 'auto' by default: fitted to the table (see table_sizes).
AUTO = "auto"
AUTO_STEPS = 2000
AUTO_CODE = 4
AUTO_WIDTH = {"per_column": 2, "least": 16, "most": 256}
# The scale the detectors give a column constant in the training rows, relative to its value.
CONSTANT_SCALE = 1e-6
# The detectors' default score: reconstruction error and code distance together (see _OutlierDetection).
CODE_AND_RECONSTRUCTION = "reconstruction_and_code"


def table_sizes(n_rows: int, n_columns: int, batch_size: int) -> dict:
    """The outlier detectors' 'auto' hyper-parameters for a table of ``n_rows`` x ``n_columns``: a code of
    min(4, columns - 1) values (at least 1), one hidden layer of 2 units a column (16 to 256), and the epochs that
    make about 2,000 steps of ``batch_size`` rows (at least one epoch)."""
    width = min(max(AUTO_WIDTH["per_column"] * n_columns, AUTO_WIDTH["least"]), AUTO_WIDTH["most"])
    return {
        "n_components": max(1, min(AUTO_CODE, n_columns - 1)),
        "hidden_layer_sizes": (width,),
        "max_iter": max(1, round(AUTO_STEPS / math.ceil(n_rows / batch_size))),
    }


def _shared() -> dict:
    """The hyper-parameters every estimator of rows takes, with their defaults: the model's, the run options they
    take and the device."""
    return {**MODEL, **training_parameters(ROWS), **HOLD_OUT}


def _float64(model: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of the fitted model to compute with (the model itself on MPS, which has no float64). float32
    BLAS kernels round a batch of one row and a batch of many differently, by more than scikit-learn's tolerance of
    1e-7; in float64 a row's code no longer depends on which rows share its batch."""
    return model if device_of(model).type == "mps" else copy.deepcopy(model).double()


# Rows a block where transform goes through X: bounded memory whatever its size.
_ROWS = 8192


def _tensor(model: torch.nn.Module, x: np.ndarray) -> torch.Tensor:
    """A copy of x on the model's device, in its precision."""
    return torch.tensor(x, dtype=next(model.parameters()).dtype, device=device_of(model))


@torch.no_grad()
def _mean_log_likelihood(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1024, seed: int = 0) -> float:
    """The mean over the rows of x of log p(x) in nats, in the model's units, with the likelihood's proper
    log-density (``log_prob``, normalising constant included): log p(x | decoder(encoder(x))) for the deterministic
    auto-encoders; for the VAE the ELBO, E_q[log p(x|z)] - KL(q(z|x) || N(0, I)), a lower bound on log p(x), with
    one z per row drawn from a generator seeded with ``seed`` (the draw ``trainer.mean_loss`` makes)."""
    if not model.variational:
        return -float(reconstruction_nll(model, x, batch_size).mean())
    generator = torch.Generator(device_of(model)).manual_seed(seed)
    total = 0.0
    with evaluating(model):
        for batch in batches(x, batch_size, model):
            batch = model.training_input(batch)  # x as the model's loss sees it
            mu, logvar = model.posterior(batch)
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            log_p = model.likelihood.log_prob(model.decoder(mu + eps * (0.5 * logvar).exp()), batch)
            total += (log_p - gaussian_kl(mu, logvar)).sum().item()
    return total / len(x)


class _BaseAutoEncoder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, TorchEstimator):
    """What the five estimators share; each subclass names its model family and its own hyper-parameters.

    Parameters (shared)
    -------------------
    n_components : int, default=2
        Size of the code, at most the number of features (fit refuses more, as PCA does).
    hidden_layer_sizes : tuple of int, default=(256, 128)
        Widths of the encoder's hidden layers; the decoder mirrors them.
    loss : {'auto', 'bce', 'mse'}, default='auto'
        'bce': cross-entropy, for values in [0, 1]; 'mse': sum of squared differences; 'auto': 'bce' when every
        training value lies in [0, 1], else 'mse'.
    standardize : bool, default=True
        Under 'mse', train on the standardized features (inverse_transform undoes it).
    max_iter : int, default=100
        Training epochs.
    batch_size : int, default=128
    learning_rate : float, default=1e-3
        Adam's step size.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the data order and the noise; an int makes ``fit`` reproducible on a device.
    device : str, default='auto'
        'auto' (cuda, then mps, then cpu), 'cpu', 'cuda', 'cuda:N' or 'mps'.
    validation_fraction : float in (0, 1) or None, default=None
        Hold out this share of the rows (drawn with random_state; at least one) and measure the loss on them after
        each epoch (validation_loss_curve_): whether the model learns its training rows by heart shows there. None:
        train on every row. (The outlier detectors hold out 0.1 by default, to set their threshold on.)
    early_stopping : bool, default=False
        With validation_fraction: keep the weights of the epoch where the held-out loss was least (best_iter_)
        rather than the last epoch's.

    Attributes
    ----------
    model_ : torch.nn.Module
        The trained model (an ``aekit.models`` family, float32, in eval mode); transform and score run a float64
        copy of it.
    spec_ : aekit.models.ModelConfig
        Its config (the family's, as ``aekit train`` records it).
    loss_ : {'bce', 'mse'}
        The loss trained with.
    scaler_ : StandardScaler or None
        The standardization applied before the encoder (None under 'bce' or standardize=False).
    n_iter_ : int
        Epochs run.
    loss_curve_ : list of float
        Mean training loss per epoch.
    validation_rows_, validation_loss_curve_ : ndarray of int, list of float
        With validation_fraction: the rows held out (their indices in X), and their mean loss after each epoch.
    best_iter_ : int
        With early_stopping: the epoch whose weights were kept (1-based).
    n_features_in_, feature_names_in_ : as in scikit-learn.
    """

    _model = ""  # the model family (its name in the registry, aekit.models.FAMILIES)
    _data = ROWS
    _defaults: dict = {}  # shared hyper-parameters whose default differs for this kind of estimator

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        config = family(cls._model)
        cls.__init__ = init_storing(
            f"{cls.__name__}.__init__",
            {**_shared(), **cls._defaults, **family_parameters(config, NetConfig), **cls._own_parameters(config)},
        )
        own = parameter_doc(config, NetConfig)
        cls.__doc__ = (cls.__doc__ or "").rstrip() + (
            "\n\n    Parameters (its own; the others: those of :class:`_BaseAutoEncoder`)\n"
            "    -------------------------------------------------------------------\n" + own + "\n"
            if own
            else "\n\n    Parameters: those of :class:`_BaseAutoEncoder`.\n"
        )

    @in_own_words
    def fit(self, X, y=None):
        """Train on the rows of X (y is ignored) and return self."""
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        x_min, x_max = float(X.min()), float(X.max())
        likelihood = choose_likelihood(self.loss, 0 <= x_min and x_max <= 1, x_min, x_max)
        params = self._fitting(X)
        spec = self._spec(X.shape[1], likelihood, params)
        try:
            device = resolve_device(self.device)
            check_model_fits(spec, device)
            settings = train_settings(self._run_options(params))
        except AekitError as error:
            raise ParameterError(str(error)) from None
        held_out = self._held_out(len(X), settings.seed, params)
        self.loss_ = LIKELIHOOD_TO_LOSS[likelihood]
        self.scaler_ = self._fitted_scaler(X) if likelihood == "gaussian" and self.standardize else None
        x = self._model_input(X).astype(np.float32)
        train, test = (x, x) if held_out is None else (np.delete(x, held_out, axis=0), x[held_out])
        data = Dataset("the training data", train, test, None, None, binary=likelihood == "bernoulli")
        model, history = fitted(spec, data, settings, device, held_out is not None, params["early_stopping"])
        self.model_, self.spec_ = model, spec
        self.n_iter_, self.loss_curve_ = len(history), [record["train_loss"] for record in history]
        for name in ("validation_rows_", "validation_loss_curve_", "best_iter_"):
            self.__dict__.pop(name, None)  # set by an earlier fit with other options
        if held_out is not None:
            self.validation_rows_ = held_out
            self.validation_loss_curve_ = [record["test_loss"] for record in history]
        if params["early_stopping"]:
            self.best_iter_ = int(np.argmin(self.validation_loss_curve_)) + 1
        return self

    def _held_out(self, n_rows: int, seed: int, params: dict) -> np.ndarray | None:
        """The rows to hold out (validation_fraction of them, at least one, drawn with the seed), or None."""
        fraction, stopping = params["validation_fraction"], params["early_stopping"]
        if not isinstance(stopping, (bool, np.bool_)):
            raise ParameterError(f"early_stopping {stopping!r} must be True or False")
        if stopping and fraction is None:
            raise ParameterError("early_stopping needs rows held out to judge on; set validation_fraction (e.g. 0.1)")
        if fraction is None:
            return None
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction < 1:
            raise ParameterError(f"validation_fraction {fraction!r} must be None or a fraction in (0, 1)")
        held = max(1, round(fraction * n_rows))
        if held >= n_rows:
            raise ParameterError(
                f"validation_fraction {fraction!r} of n_samples={n_rows} leaves no row to train on; give more rows "
                "or a smaller validation_fraction (None holds none out)"
            )
        return np.sort(np.random.default_rng(seed).permutation(n_rows)[:held])

    def transform(self, X):
        """The code of each row of X."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        return self._run("encode", X, standardized=True).astype(X.dtype, copy=False)

    def inverse_transform(self, X):
        """The decoder's mean for each code (row of X), in the units of the training data."""
        check_is_fitted(self)
        codes = check_array(X, dtype=[np.float64, np.float32])
        if codes.shape[1] != self.spec_.code_dim:
            raise ValueError(
                f"X has {codes.shape[1]} columns, but {type(self).__name__}.inverse_transform expects "
                f"codes of {self.spec_.code_dim} (n_components)"
            )
        out = self._run("decode", codes)
        if self.scaler_ is not None:
            out = self.scaler_.inverse_transform(out)
        return out.astype(codes.dtype)

    def score(self, X, y=None):
        """The average log-likelihood of the rows of X in nats, in the units of X, as ``PCA.score`` gives it (higher
        is better).

        Each row's log p(x) under the model's likelihood with its normalising constant: under 'bce' minus the
        cross-entropy (a log-probability for binary X, not a normalised density for values between 0 and 1); under
        'mse' the log-density of a Gaussian of mean the reconstruction and variance 1/2 per standardized feature,
        minus sum(log(scaler_.scale_)) where ``scaler_`` is set (the change of variables back to the units of X).
        The deterministic auto-encoders score log p(x | decoder(encoder(x))), the likelihood of x given its own code
        (they have no prior over codes). The VAE scores the ELBO, E_q[log p(x|z)] - KL(q(z|x) || N(0, I)), whatever
        its beta, with one seeded sample of z per row: a lower bound on the average log-likelihood, not the
        log-likelihood itself.
        """
        X = self._scored(X)
        model = _float64(self.model_)
        return _mean_log_likelihood(model, _tensor(model, self._model_input(X))) - self._log_scale()

    def _scored(self, X) -> np.ndarray:
        """X checked for scoring by the fitted model (the cross-entropy refuses values outside [0, 1])."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        with speaking(self._words()):
            choose_likelihood(self.loss_, False, float(X.min()), float(X.max()))
        return X

    def _log_scale(self) -> float:
        """sum(log(scaler_.scale_)): the density of X is the density of the standardized X / prod(scale_)."""
        return 0.0 if self.scaler_ is None else float(np.log(self.scaler_.scale_).sum())

    @classmethod
    def _own_parameters(cls, config: type[ModelConfig]) -> dict:
        """Hyper-parameters of a kind of estimator beyond the shared and the family's ones (none here)."""
        return {}

    @property
    def _n_features_out(self) -> int:
        return self.spec_.code_dim

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def __reduce__(self):
        # Pickled by the family's config class rather than by this class: estimator(name) makes a class of no name
        # in this module for any family but the five above, and unpickling the config class imports its family.
        detector = isinstance(self, _OutlierDetection)
        return _unpickled, (family(self._model), detector), self.__getstate__()

    def _fitting(self, X: np.ndarray) -> dict:
        """The hyper-parameters that fit trains with: the estimator's own (the detectors resolve their 'auto'
        ones)."""
        return self.get_params(deep=False)

    def _fitted_scaler(self, X: np.ndarray) -> StandardScaler:
        """The standardization of X's columns (a constant column is left in its units, as StandardScaler does)."""
        return StandardScaler().fit(X)

    def _spec(self, n_features: int, likelihood: str, params: dict) -> ModelConfig:
        whole(params["n_components"], "n_components")
        config = family(self._model)
        skip = {*training_parameters(ROWS), *HOLD_OUT, *self._own_parameters(config)}
        fields = self._model_fields(config, skip, params)
        try:
            return model_config(self._model, (n_features,), likelihood=likelihood, **fields)
        except AekitError as error:
            raise ParameterError(str(error)) from None

    def _model_input(self, X: np.ndarray) -> np.ndarray:
        """X as the model sees it: standardized where ``scaler_`` is set."""
        return self.scaler_.transform(X) if self.scaler_ is not None else X

    @torch.no_grad()
    def _run(self, method: str, x: np.ndarray, standardized: bool = False) -> np.ndarray:
        """The model's ``method`` (encode or decode) on the rows of x, computed in float64 a block of rows at a time
        (each block standardized first, with ``standardized``), so that no whole copy of x is made."""
        model = _float64(self.model_)
        prepare = self._model_input if standardized else None
        return np.concatenate(
            [getattr(model, method)(batch).cpu().numpy() for batch in batches(x, _ROWS, model, prepare)]
        )


class AutoEncoder(_BaseAutoEncoder):
    """Auto-encoder: minimises -log p(x | decoder(encoder(x)))."""

    _model = "ae"


class DenoisingAutoEncoder(_BaseAutoEncoder):
    """Denoising auto-encoder: minimises -log p(x | decoder(encoder(corrupt(x)))); transform encodes clean rows."""

    _model = "dae"


class DropoutAutoEncoder(_BaseAutoEncoder):
    """Dropout auto-encoder: minimises -log p(x | decoder(encoder(x))) with dropout while training."""

    _model = "dropout-ae"


class AdversarialAutoEncoder(_BaseAutoEncoder):
    """Adversarial auto-encoder (Makhzani et al. 2015): reconstruction, then a discriminator that pushes the codes
    toward the prior."""

    _model = "aae"


class VariationalAutoEncoder(_BaseAutoEncoder):
    """Variational auto-encoder: minimises E_q[-log p(x|z)] + beta KL(q(z|x) || N(0, I)); transform gives the
    posterior mean and score the ELBO, a lower bound on the average log-likelihood."""

    _model = "vae"


# Each family's estimator class and the config class it was made for (a family registered again gets a new one).
_ESTIMATORS: dict[str, tuple[type[ModelConfig], type[_BaseAutoEncoder]]] = {
    cls._model: (family(cls._model), cls)
    for cls in (AutoEncoder, DenoisingAutoEncoder, DropoutAutoEncoder, AdversarialAutoEncoder, VariationalAutoEncoder)
}


def estimator(name: str) -> type[_BaseAutoEncoder]:
    """The scikit-learn estimator class of the model family ``name`` (any registered family with networks; one is
    made, once, for a family registered after this module was written), its parameters from the family's config."""
    config = family(name)
    if _ESTIMATORS.get(name, (None,))[0] is not config:
        if config.model_class.takes_any_size and not issubclass(config, NetConfig):
            if config.model_class.gives_codes:
                raise ParameterError(
                    f"{name} codes photos of any size rather than rows; train it with `aekit train` and compress with "
                    "aekit.uses.compress.compress_images"
                )
            raise ParameterError(f"{name} restores images of any size rather than coding rows; use PhotoRestorer")
        if not issubclass(config, NetConfig):
            raise ParameterError(f"{name} has no networks to train; use scikit-learn's own estimator for it")
        doc = (config.model_class.__doc__ or config.__doc__ or name).strip().splitlines()[0]
        made = type(
            config.__name__.removesuffix("Config") + "Estimator",
            (_BaseAutoEncoder,),
            {"_model": name, "__doc__": doc, "__module__": __name__},
        )
        _ESTIMATORS[name] = (config, made)
    return _ESTIMATORS[name][1]


def __getattr__(name: str) -> type:
    # The classes estimator() and outlier_detector() make, by their names: where pickle looks for a class it saved.
    if not name.startswith("_"):
        for config in list(FAMILIES.values()):
            if issubclass(config, NetConfig):
                for made in (estimator(config.family), outlier_detector(config.family)):
                    if made.__name__ == name:
                        return made
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _unpickled(config: type[ModelConfig], detector: bool) -> _BaseAutoEncoder:
    """A blank estimator of ``config``'s family (its outlier detector with ``detector``) for pickle to fill: the
    family is registered where it is not yet (a family a joblib worker got by value, e.g. one made in a function)."""
    if config.family not in FAMILIES:
        register(config)
    cls = (outlier_detector if detector else estimator)(config.family)
    return cls.__new__(cls)


class _OutlierDetection(OutlierMixin):
    """An outlier detector made of an auto-encoder, as scikit-learn's ``IsolationForest`` is one: ``fit`` trains the
    model on (mostly) normal rows and sets ``offset_``; ``score_samples`` gives minus each row's anomaly score, so
    higher is more normal; ``decision_function`` = score_samples - offset_, negative for outliers; ``predict`` is +1
    for an inlier and -1 for an outlier (decision_function < 0). transform, inverse_transform and score are those of
    the auto-encoder.

    Its size and training length fit the table by default (``'auto'``, :func:`table_sizes`): a code of
    min(4, columns - 1) values, one hidden layer of 2 units a column (16 to 256), about 2,000 steps of
    ``batch_size`` rows whatever the number of rows (at least one epoch). A small net trained a fixed number of
    steps is what keeps an auto-encoder from learning to reconstruct the anomalies among its training rows too:
    on 16 of ADBench's tables (bench/adbench.py, seed 0) the estimators' defaults of a code of 2, layers of 256 and
    128 units and 100 epochs gave a mean AUROC of 0.585, these 0.742. Each can be set as for the auto-encoder.

    The loss is 'mse' by default, whatever the range of X: a table's columns are real values even where they all lie
    in [0, 1] (on the nine ADBench tables that do, the cross-entropy of loss='auto' gave a mean AUROC 0.036 lower,
    seed 0; loss='bce' or 'auto' remain for images of intensities). Each column is standardized (its units and scale
    do not matter: a copy of a column is one more column), and a column constant in the training rows gets a scale
    of a millionth of its value, so that a row which breaks it is an outlier by far.

    Parameters (detection)
    ----------------------
    n_components : 'auto', int or tuple of int, default='auto'
        The code size; several, e.g. (2, 4, 8): an ensemble of one detector per size (``estimators_``, each fitted
        as this one but for its size, from one seed), score_samples the mean of theirs (each in units of its own
        training medians, so they add alike; transform, inverse_transform and score are then refused). On ADBench's
        35 tables codes of 2, 4 and 8 values (at most columns - 1) gave a mean AUROC of 0.763 against 0.754 for the
        default code alone (seed 0; higher on 22 tables, lower on 10), for three times the time.
    anomaly_score : {'reconstruction_and_code', 'reconstruction_nll', 'neg_elbo', 'nll_is'}, \
default='reconstruction_and_code'
        'reconstruction_and_code' (every family): e / median(e) + m / median(m), e a row's reconstruction error
        (the sum of squared differences between the row, standardized under 'mse', and its reconstruction), m the
        squared Mahalanobis distance of its code from the training rows' codes (their mean and covariance), each
        median over the training rows: a row is unusual when the decoder cannot draw it, or when its place among the
        codes is rare, and dividing by the medians keeps either from outweighing the other by its number of
        dimensions. 'reconstruction_nll': -log p(x | decoder(encoder(x))) in nats, under 'mse' a Gaussian of
        variance 1/2 per standardized feature around the reconstruction, normalising constant and
        sum(log(scaler_.scale_)) included, so that score_samples is a log-likelihood in the units of X. The VAE
        also has 'neg_elbo', the negative ELBO, and 'nll_is', the importance-weighted estimate of -log p(x), both
        from ``nll_samples`` posterior draws per row (the same draws for every row, so a row's score does not
        depend on the rows scored with it).
    contamination : 'auto' or float in (0, 0.5], default='auto'
        A fraction: the share of the rows of X to take for outliers, offset_ being that quantile of their
        score_samples (as IsolationForest sets it; held-out rows included). 'auto': Tukey's fence, the box plot's
        rule for outliers: offset_ = Q1 - 1.5 (Q3 - Q1), Q1 and Q3 the quartiles of the score_samples of the rows
        held out (validation_fraction; of every row without it); it flags about 0.7% of normally distributed
        scores, and more where the rows have a long tail of rows the model explains badly (contaminated data). Set
        on rows not trained on, it holds for new rows of the same kind even where the model learnt its training
        rows by heart: fitted on the 126 eights of scikit-learn's digits (README, loss='auto'), the fence flagged
        92% of the unseen test eights with validation_fraction=None (set on the training rows), 2% at the default.
    validation_fraction : float in (0, 1) or None, default=0.1
        As for the auto-encoder, but held out by default: the rows 'auto' sets offset_ on.
    nll_samples : int, default=100
        VAE only: posterior draws per row for 'neg_elbo' and 'nll_is'.

    Attributes (beyond the auto-encoder's)
    --------------------------------------
    offset_ : float
        The threshold on score_samples below which a row is an outlier.
    code_mean_, code_precision_ : ndarray
        With 'reconstruction_and_code': the training codes' mean and the (pseudo-)inverse of their covariance.
    error_scale_, code_scale_ : float
        With 'reconstruction_and_code': the medians of e and m over the training rows.
    estimators_ : list of detectors
        With several code sizes: the fitted detector of each (the other attributes above are theirs).
    """

    _defaults = {
        "n_components": AUTO,
        "hidden_layer_sizes": AUTO,
        "max_iter": AUTO,
        "loss": "mse",
        "validation_fraction": 0.1,
    }

    @classmethod
    def _own_parameters(cls, config: type[ModelConfig]) -> dict:
        own = {"anomaly_score": CODE_AND_RECONSTRUCTION, "contamination": "auto"}
        return {**own, "nll_samples": SAMPLES} if config.model_class.variational else own

    def _fitted_scaler(self, X: np.ndarray) -> StandardScaler:
        """The standardization of X's columns, a column constant in X given the scale of a millionth of its value
        (or of 1, for zeros): a row that breaks a column which never varied is an outlier by far."""
        scaler = super()._fitted_scaler(X)
        constant = scaler.var_ == 0
        scaler.scale_[constant] = CONSTANT_SCALE * np.maximum(np.abs(scaler.mean_[constant]), 1.0)
        return scaler

    def _fitting(self, X: np.ndarray) -> dict:
        """The hyper-parameters with the 'auto' ones fitted to X's rows and columns (:func:`table_sizes`)."""
        params = super()._fitting(X)
        fitted_sizes = table_sizes(*X.shape, whole(params["batch_size"], "batch_size"))
        return {**params, **{name: size for name, size in fitted_sizes.items() if _is_auto(params[name])}}

    @in_own_words
    def fit(self, X, y=None):
        """Train on the rows of X (y is ignored) but those held out, set offset_ (see contamination) and return
        self."""
        self._check_detection()
        if _is_sizes(self.n_components):
            return self._fit_ensemble(X)
        self.__dict__.pop("estimators_", None)  # set by an earlier fit of an ensemble
        super().fit(X)
        X = self._scored(X)
        held_out = getattr(self, "validation_rows_", None)
        trained = X if held_out is None else np.delete(X, held_out, axis=0)
        if self.anomaly_score == CODE_AND_RECONSTRUCTION:
            errors, codes = self._errors_and_codes(trained)
            self.code_mean_ = codes.mean(0)
            centred = codes - self.code_mean_
            covariance = centred.T @ centred / max(len(codes) - 1, 1)
            # A ridge of a millionth of the mean variance: codes that fill fewer dimensions than the code has.
            ridge = 1e-6 * max(float(np.trace(covariance)) / len(covariance), np.finfo(float).tiny)
            self.code_precision_ = np.linalg.pinv(covariance + ridge * np.eye(len(covariance)))
            self.error_scale_, self.code_scale_ = _typical(errors), _typical(self._code_distance(codes))
        self._set_offset(X, held_out)
        return self

    def _set_offset(self, X: np.ndarray, held_out: np.ndarray | None) -> None:
        """offset_ from the rows held out ('auto') or from every row of X (a fraction): see contamination."""
        if self.contamination == "auto":
            low, high = np.percentile(self.score_samples(X if held_out is None else X[held_out]), [25, 75])
            self.offset_ = float(low - 1.5 * (high - low))
        else:
            self.offset_ = float(np.percentile(self.score_samples(X), 100 * self.contamination))

    def _fit_ensemble(self, X) -> _OutlierDetection:
        """One detector per code size of n_components, each as this one but for it, from one seed (so all hold out
        the same rows); score_samples is the mean of theirs."""
        sizes = [whole(size, "n_components") for size in self.n_components]
        if len(set(sizes)) != len(sizes):
            raise ParameterError(f"n_components {tuple(sizes)} names a code size twice; give each size once")
        X = validate_data(self, X, dtype=[np.float64, np.float32])
        # An int random_state is each member's own, so the member of the default size is the detector alone.
        seed = self.random_state
        if not isinstance(seed, numbers.Integral):
            seed = int(check_random_state(seed).randint(2**31 - 1))
        self.estimators_ = [clone(self).set_params(n_components=size, random_state=seed).fit(X) for size in sizes]
        self._set_offset(X, getattr(self.estimators_[0], "validation_rows_", None))
        return self

    def _check_detection(self) -> None:
        scores = (*(SCORES if hasattr(self, "nll_samples") else (RECONSTRUCTION,)), CODE_AND_RECONSTRUCTION)
        if self.anomaly_score not in scores:
            raise ParameterError(
                f"unknown anomaly_score {self.anomaly_score!r} for {type(self).__name__}; use one of "
                f"{', '.join(scores)}"
            )
        fraction = isinstance(self.contamination, numbers.Real) and not isinstance(self.contamination, bool)
        if not (self.contamination == "auto" if isinstance(self.contamination, str) else fraction) or (
            fraction and not 0 < self.contamination <= 0.5
        ):
            raise ParameterError(f"contamination {self.contamination!r} must be 'auto' or a fraction in (0, 0.5]")
        if hasattr(self, "nll_samples"):
            whole(self.nll_samples, "nll_samples")

    def _errors_and_codes(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return errors_and_codes(_float64(self.model_), X, prepare=self._model_input)

    def _code_distance(self, codes: np.ndarray) -> np.ndarray:
        """The squared Mahalanobis distance of each code from the training codes."""
        centred = codes - self.code_mean_
        return np.einsum("ij,jk,ik->i", centred, self.code_precision_, centred)

    def score_samples(self, X):
        """Minus each row's anomaly score (see anomaly_score): higher is more normal; with 'reconstruction_nll',
        'neg_elbo' or 'nll_is', log p(x) in nats in the units of X (a bound or an estimate for the last two)."""
        if hasattr(self, "estimators_"):
            check_is_fitted(self)
            X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
            return np.mean([estimator.score_samples(X) for estimator in self.estimators_], axis=0)
        X = self._scored(X)
        if self.anomaly_score == CODE_AND_RECONSTRUCTION:
            errors, codes = self._errors_and_codes(X)
            return -(errors / self.error_scale_ + self._code_distance(codes) / self.code_scale_)
        scores = anomaly_scores(
            _float64(self.model_),
            X,
            self.anomaly_score,
            samples=getattr(self, "nll_samples", SAMPLES),
            prepare=self._model_input,
        )
        return -scores - self._log_scale()

    def transform(self, X):
        self._check_single("transform")
        return super().transform(X)

    def inverse_transform(self, X):
        self._check_single("inverse_transform")
        return super().inverse_transform(X)

    def score(self, X, y=None):
        self._check_single("score")
        return super().score(X, y)

    def _check_single(self, method: str) -> None:
        if hasattr(self, "estimators_"):
            raise ParameterError(
                f"an ensemble of code sizes (n_components={self.n_components!r}) has no single code to {method} with; "
                f"call estimators_[i].{method}, one detector of one size"
            )

    def decision_function(self, X):
        """score_samples - offset_: negative for outliers, positive for inliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X):
        """+1 for an inlier, -1 for an outlier (decision_function < 0)."""
        return np.where(self.decision_function(X) < 0, -1, 1)


def _is_auto(value) -> bool:
    return isinstance(value, str) and value == AUTO


def _is_sizes(value) -> bool:
    """Whether n_components names several code sizes (an ensemble): a tuple, list or array of them."""
    return isinstance(value, (tuple, list, np.ndarray))


def _typical(values: np.ndarray) -> float:
    """The median of values >= 0, else their mean where it is 0 (most rows exactly reconstructed), else 1."""
    return next((float(scale) for scale in (np.median(values), values.mean()) if scale > 0), 1.0)


_DETECTORS: dict[str, type] = {}


def outlier_detector(name: str) -> type:
    """The scikit-learn outlier detector of the model family ``name`` (any family :func:`estimator` has): its
    estimator with :class:`_OutlierDetection`'s methods and parameters, made once."""
    if name not in _DETECTORS:
        base = estimator(name)
        title = base.__name__.removesuffix("Estimator") + "OutlierDetector"
        doc = (
            f"Outlier detector on the model of :class:`{base.__name__}`: score_samples is minus each row's anomaly "
            "score, -log p(x) in nats (higher is more normal).\n\n    Parameters for the detection: those of "
            ":class:`_OutlierDetection`."
        )
        _DETECTORS[name] = type(title, (_OutlierDetection, base), {"__doc__": doc, "__module__": __name__})
    return _DETECTORS[name]


AutoEncoderOutlierDetector = outlier_detector("ae")
DenoisingAutoEncoderOutlierDetector = outlier_detector("dae")
DropoutAutoEncoderOutlierDetector = outlier_detector("dropout-ae")
AdversarialAutoEncoderOutlierDetector = outlier_detector("aae")
VariationalAutoEncoderOutlierDetector = outlier_detector("vae")
