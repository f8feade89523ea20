"""``NPVAE``: the npVAE as a scikit-learn estimator (``BaseEstimator``, ``TransformerMixin``).

    from npvae_tf import NPVAE

    model = NPVAE(z_dim=20, epochs=50)               # as umap.UMAP(): fit, then transform
    E = model.fit_transform(X)                       # X [N, D], [N, H, W] or [N, H, W, C] -> [N, 2]
    X_hat = model.inverse_transform(E)               # [N, ...] in X's shape and units
    X_new = model.sample(16, random_state=0)         # [16, ...] generated examples
    model.score(X)                                   # mean ELBO per example (nats)

A thin layer over the Python API (:mod:`npvae_tf.serving.api`): ``fit`` trains a run folder
from the arrays (:func:`npvae_tf.serving.api.train`), the other methods call the loaded
:class:`~npvae_tf.serving.api.TrainedRun` (``run_``). Units: the examples come back in X's
own units: uint8 data is seen as bytes (divided by 255 for the model, decoded means multiplied
by 255); the ``gaussian`` likelihood's standardisation is applied and undone by the run.

Splits: the last tenth of X (at most 5,000 examples) validates (the serving lengthscale is
chosen on it) and is not in the reference set, so ``embedding_`` holds the locations of the
first ``N - n_validation`` examples; the first ``min(N, 1000)`` examples are the run's "test"
split (its ``test_metrics.json``), so nothing else is held out. Shuffle X if it is sorted.

Pickling packs the run folder's files into the pickle; unpickling writes them to a temporary
folder the copy owns (removed when it is garbage-collected). See docs/estimator.md.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from typing import Dict, Optional

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from npvae_tf.runs.layout import (CONFIG_FILE, DATA_FILE, FIT_FILE, LOG_FILE, MODEL_FILE,
                                  REFERENCE_FILE, TEST_METRICS_FILE, X_DENSITY_FILE)

# The fewest examples a fit takes: 2 validate (the serving lengthscale), 2 train.
MIN_EXAMPLES = 4
# A tenth of the examples validates (the serving lengthscale), at most this many.
MAX_VALIDATION = 5000
# The first this many examples form the run's "test" split (test_metrics.json).
TEST_EXAMPLES = 1000
# The files a pickle carries: what load_run and the TrainedRun read, and the records.
PACKED_FILES = (CONFIG_FILE, MODEL_FILE, REFERENCE_FILE, X_DENSITY_FILE, DATA_FILE,
                TEST_METRICS_FILE, FIT_FILE, LOG_FILE)
# score_samples: E_q[log p(y|z)] over the same ELBO_DRAWS standard-normal draws for every
# example (common random numbers), so a score depends on the example alone, not its batch.
ELBO_DRAWS = 8
ELBO_SEED = 20170
ELBO_BATCH = 512
# Data of this kind is in bytes: 0..255 for the user, divided by 255 for the model.
BYTES = "bytes"
# The arrays a fit kept in its run folder (a run_dir of the user's): evaluate.py reads them.
FIT_DATA_FILE = "fit_data.npz"


def _ndim(X) -> int:
    """Dimensions of array-like ``X`` (sparse matrices and DataFrames say it themselves)."""
    return X.ndim if hasattr(X, "ndim") else np.asarray(X).ndim


class NPVAE(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """The nonparametric VAE (Bodin et al. 2017) as a scikit-learn transformer into its X space.

    Parameters (stored unchanged; checked by ``fit``):
      scheme: a name of :data:`npvae_tf.core.objective.SCHEMES` with an X space: "neighbour"
        (the recommended one: the best map, placement by nearest training examples), "paper"
        (the paper's objective), ...; not "vae".
      z_dim: latent dimension Z. x_dim: dimension of X (the embedding, ``transform``'s width).
      epochs, batch_size, hidden: training length, mini-batch, hidden widths of every MLP.
      likelihood: "bernoulli", "continuous_bernoulli" or "gaussian"; None: "bernoulli" for
        uint8 data or values in [0, 1], else "gaussian".
      random_state: int seed (None: 0), or a RandomState to draw one from.
      verbose: 0 silent, 1 a line per epoch, 2 also a live line.
      run_dir: None: a temporary run folder the estimator owns, removed when it is
        garbage-collected or refitted. A path: the run folder is kept; an interrupted fit
        (Ctrl-C) resumes when fit is called again with the same settings and data.

    Fitted attributes: ``run_`` (the :class:`~npvae_tf.serving.api.TrainedRun`),
    ``embedding_`` ``[M, x_dim]`` (the training examples' locations, the reference set's x),
    ``n_features_in_`` (values per example, P), ``feature_names_in_`` (DataFrame columns),
    ``run_dir_`` (the run folder in use).
    """

    def __init__(self, scheme="neighbour", z_dim=20, x_dim=2, epochs=50, batch_size=128,
                 likelihood=None, hidden=(500, 500), random_state=None, verbose=0,
                 run_dir=None):
        self.scheme = scheme
        self.z_dim = z_dim
        self.x_dim = x_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.likelihood = likelihood
        self.hidden = hidden
        self.random_state = random_state
        self.verbose = verbose
        self.run_dir = run_dir

    # --- scikit-learn's conventions --------------------------------------------------------
    @staticmethod
    def expected_failed_checks(estimator=None) -> Dict[str, str]:
        """The scikit-learn estimator checks NPVAE fails by nature, ``{check name: reason}``
        (``parametrize_with_checks(..., expected_failed_checks=NPVAE.expected_failed_checks)``;
        docs/estimator.md)."""
        float32 = ("the network computes in float32: rows computed in batches of another "
                   "size or order differ in the last bits (~1e-7 relative), above the "
                   "check's tolerance")
        return {"check_methods_sample_order_invariance": float32,
                "check_methods_subset_invariance": float32}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]  # the model computes in float32
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "run_")

    @property
    def _n_features_out(self) -> int:
        return self.run_.config.x_dim

    # --- fitting ---------------------------------------------------------------------------
    def fit(self, X, y=None):
        """Trains the npVAE on X (``[N, D]``, ``[N, H, W]`` or ``[N, H, W, C]``); y: optional
        labels ``[N]``, kept for figures and metrics only. Returns self."""
        from npvae_tf.core.config import Config
        from npvae_tf.core.objective import SCHEMES
        from npvae_tf.data.sources import RawData
        from npvae_tf.serving.api import train

        X = self._validated(X, reset=True)
        n = len(X)
        if n < MIN_EXAMPLES:
            raise ValueError(f"NPVAE needs at least {MIN_EXAMPLES} examples (2 to validate, 2 "
                             f"to train), got n_samples = {n}")
        scheme = SCHEMES.get(self.scheme) if isinstance(self.scheme, str) else None
        if scheme is None or scheme.changes.get("model") != "npvae":
            names = [k for k, s in SCHEMES.items() if s.changes.get("model") == "npvae"]
            raise ValueError(f"scheme must be one of {names}, got {self.scheme!r}")
        data = X if X.dtype == np.uint8 else X.astype(np.float32)
        likelihood = self.likelihood
        if likelihood is None:
            in_unit = data.dtype == np.uint8 or (data.min() >= 0.0 and data.max() <= 1.0)
            likelihood = "bernoulli" if in_unit else "gaussian"
        seed = self.random_state
        if seed is None or isinstance(seed, np.random.RandomState):
            seed = 0 if seed is None else int(seed.randint(2 ** 31 - 1))
        config = Config(**scheme.changes, z_dim=self.z_dim, x_dim=self.x_dim,
                        hidden=tuple(self.hidden), epochs=self.epochs,
                        batch_size=self.batch_size, likelihood=likelihood, seed=int(seed),
                        image_shape=data.shape[1:],
                        validation_examples=min(MAX_VALIDATION, max(2, n // 10)))
        labels, class_names = _labels(y, n)
        test = slice(0, min(n, TEST_EXAMPLES))
        raw = RawData(data, labels, data[test], None if labels is None else labels[test],
                      "NPVAE.fit", "npz", class_names)
        self._release()
        if self.run_dir is None:
            folder, owned = tempfile.mkdtemp(prefix="npvae-"), True
        else:
            folder, owned = os.fspath(self.run_dir), False
            _check_same_data(folder, raw)
        try:
            run = train(config, folder, data=raw, verbose=min(int(self.verbose), 2))
        except BaseException:  # Ctrl-C too: an own folder cannot be resumed by anyone
            if owned:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        if not owned:  # a folder the user keeps: evaluate.py and export.py find the data
            _keep_data(folder, raw)
        self._attach(run, folder if owned else None)
        return self

    def _attach(self, run, owned: Optional[str]) -> None:
        """Sets the fitted attributes from ``run``; ``owned``: a folder to remove with self."""
        if not run.has_x:
            raise ValueError(f"{run.path} is a VAE run; NPVAE needs an npVAE (a run with X)")
        self.run_ = run
        self.run_dir_ = run.path
        self.embedding_ = run.reference.x
        self.n_features_in_ = run.config.image_dim
        if owned is not None:
            self._cleanup = weakref.finalize(self, shutil.rmtree, owned, True)

    def _release(self) -> None:
        """Forgets the fitted run and removes the temporary folder this estimator owns."""
        cleanup = self.__dict__.pop("_cleanup", None)
        for name in ("run_", "run_dir_", "embedding_", "n_features_in_"):
            self.__dict__.pop(name, None)
        if cleanup is not None:
            cleanup()

    @classmethod
    def load(cls, run_dir) -> "NPVAE":
        """A fitted estimator over the finished npVAE run in ``run_dir`` (kept, not owned);
        its parameters are the run's settings (``scheme`` None if no named scheme matches)."""
        from npvae_tf.serving.api import load_run

        run = load_run(os.fspath(run_dir))
        config = run.config
        estimator = cls(scheme=config.scheme_name, z_dim=config.z_dim, x_dim=config.x_dim,
                        epochs=config.epochs, batch_size=config.batch_size,
                        likelihood=config.likelihood, hidden=tuple(config.hidden),
                        random_state=config.seed, run_dir=run.path)
        estimator._attach(run, None)
        return estimator

    # --- the model -------------------------------------------------------------------------
    def transform(self, X) -> np.ndarray:
        """Locations in X, ``[N, x_dim]`` float32, of examples ``[N, ...]`` (X's units): where
        the run serves them (``TrainedRun.locate``: for the neighbour schemes the median X of
        each example's 15 nearest training examples, else the X encoder's ``f(y)``)."""
        check_is_fitted(self)
        return self.run_.locate(self._to_run(self._validated(X, reset=False)))

    def fit_transform(self, X, y=None, **fit_params) -> np.ndarray:
        """``fit(X, y).transform(X)``: ``[N, x_dim]``."""
        return self.fit(X, y, **fit_params).transform(X)

    def inverse_transform(self, X) -> np.ndarray:
        """Examples decoded at locations ``[N, x_dim]`` (z~ over the reference set), in the
        training data's shape and units: ``[N, ...]`` float32 (decoded means)."""
        check_is_fitted(self)
        locations = check_array(X, dtype=np.float32, input_name="X")
        if locations.shape[1] != self.run_.config.x_dim:
            raise ValueError(f"X has {locations.shape[1]} coordinates, but NPVAE's X space has "
                             f"{self.run_.config.x_dim}")
        return self._from_run(self.run_.generate_from_x(locations))

    def sample(self, n_samples: int = 1, random_state=None) -> np.ndarray:
        """``n_samples`` generated examples ``[n_samples, ...]`` (X's shape and units): x from
        the density over X, decoded as :meth:`inverse_transform`. An int ``random_state``
        gives the same examples every time."""
        check_is_fitted(self)
        seed = random_state if isinstance(random_state, (int, np.integer)) else \
            check_random_state(random_state).randint(2 ** 31 - 1)
        return self._from_run(self.run_.sample(n_samples, seed=int(seed)))

    def score_samples(self, X) -> np.ndarray:
        """The ELBO of each example, ``[N]`` float64 nats: ``E_q[log p(y|z)] - KL(q || p)``,
        the expectation over the same 8 standard-normal draws for every example (so a score
        does not depend on the other examples). Gaussian likelihood: a density in X's own
        units (the standardisation's log-Jacobian included); the Bernoulli likelihoods: on
        values in [0, 1] (bytes divided by 255)."""
        check_is_fitted(self)
        values = self._to_run(self._validated(X, reset=False))
        scaling, config = self.run_.scaling, self.run_.config
        jacobian = -scaling.log_det(values.shape[1])
        if scaling.kind == "standardised":
            values = scaling.to_model(values)
        elif values.size and (values.min() < 0.0 or values.max() > 1.0):
            raise ValueError(f"X must be in the training data's range for the "
                             f"{config.likelihood} likelihood")
        return _elbo(self.run_.model, values.astype(np.float32), config.z_dim) + jacobian

    def score(self, X, y=None) -> float:
        """The mean ELBO per example (nats; :meth:`score_samples`): higher is better, so
        ``GridSearchCV`` compares settings by it."""
        return float(np.mean(self.score_samples(X)))

    # --- units and shapes ------------------------------------------------------------------
    def _validated(self, X, reset: bool) -> np.ndarray:
        """``[N, P]`` (uint8 kept, other numbers as float32 or float64), checked: finite,
        numeric, 2-D or of the training examples' shape, P values per example after fit."""
        if _ndim(X) <= 2:
            X = validate_data(self, X, reset=reset, dtype="numeric")
        else:
            X = check_array(X, allow_nd=True, dtype="numeric", input_name="X")
            if reset:
                self.__dict__.pop("feature_names_in_", None)
            elif X.shape[1:] != tuple(self.run_.config.image_shape):
                raise ValueError(f"X has examples of shape {X.shape[1:]}, but NPVAE is "
                                 f"expecting {tuple(self.run_.config.image_shape)}")
            X = X if reset else X.reshape(len(X), -1)
        if X.dtype.kind == "b":
            X = X.astype(np.float32)
        return X

    def _to_run(self, X: np.ndarray) -> np.ndarray:
        """X's units -> the run's API units ``[N, P]`` float32 (bytes: divided by 255)."""
        if self.run_.scaling.kind == BYTES:
            return X.astype(np.float32) / np.float32(255.0)
        return X.astype(np.float32, copy=False)

    def _from_run(self, values: np.ndarray) -> np.ndarray:
        """The run's API units ``[N, P]`` -> X's units and shape ``[N, ...]``."""
        if self.run_.scaling.kind == BYTES:
            values = values * np.float32(255.0)
        return values.reshape((len(values),) + tuple(self.run_.config.image_shape))

    # --- pickling: the run folder travels inside the pickle --------------------------------
    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_cleanup", None)
        run = state.pop("run_", None)
        if run is not None:
            state["_run_files"] = {
                name: open(os.path.join(run.path, name), "rb").read()
                for name in PACKED_FILES if os.path.isfile(os.path.join(run.path, name))}
        return state

    def __setstate__(self, state):
        state = dict(state)
        files = state.pop("_run_files", None)
        super().__setstate__(state)
        if files is not None:
            from npvae_tf.serving.api import load_run

            folder = tempfile.mkdtemp(prefix="npvae-")
            try:
                for name, content in files.items():
                    with open(os.path.join(folder, name), "wb") as f:
                        f.write(content)
                run = load_run(folder)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            embedding = self.__dict__.get("embedding_")
            self._attach(run, folder)
            if embedding is not None:
                self.embedding_ = embedding


def _labels(y, n: int):
    """``(int64 [N] class indices or None, class names or None)`` from labels ``y``."""
    if y is None:
        return None, None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (n,):
        raise ValueError(f"y must be [N] labels for the {n} examples, got shape {y.shape}")
    classes, index = np.unique(y, return_inverse=True)
    return index.astype(np.int64), [str(c) for c in classes]


def _keep_data(folder: str, raw) -> str:
    """Writes the arrays a run was fitted on into its folder (:data:`FIT_DATA_FILE`, Keras'
    ``.npz`` layout) and points its ``data.json`` at them, so ``evaluate.py RUN`` reads the
    same arrays again (the same fingerprint) instead of a source that was a Python object."""
    from npvae_tf.core.files import atomic_write, write_json
    from npvae_tf.runs.layout import recorded_data

    path = os.path.abspath(os.path.join(folder, FIT_DATA_FILE))
    arrays = {"x_train": raw.train_x, "x_test": raw.test_x}
    if raw.train_y is not None:
        arrays.update(y_train=raw.train_y, y_test=raw.test_y)
    if not os.path.isfile(path):
        atomic_write(path, lambda tmp: np.savez(tmp, **arrays))
    recorded = recorded_data(folder) or {}
    spec = {**recorded.get("spec", {}), "path": path}
    write_json(os.path.join(folder, DATA_FILE), {**recorded, "spec": spec, "source": path})
    return path


def _check_same_data(folder: str, raw) -> None:
    """A finished run in ``folder`` fitted on other data is refused (training would find it
    finished and return it without reading the data)."""
    from npvae_tf.data.datasets import fingerprint
    from npvae_tf.runs.layout import is_finished, recorded_data

    if not is_finished(folder):
        return  # a new folder, or an unfinished run: training checks its data itself
    recorded = (recorded_data(folder) or {}).get("sha256")
    if recorded and recorded != fingerprint(raw.train_x, raw.train_y, raw.test_x, raw.test_y):
        raise ValueError(f"run_dir {folder} holds a run fitted on other data; choose another "
                         "run_dir (or remove that folder) to fit this data")


def _elbo(model, images: np.ndarray, z_dim: int) -> np.ndarray:
    """Per-example ELBO ``[N]`` (float64) of model-unit images ``[N, P]`` (evaluation mode):
    ``mean_k log p(y | mu + sigma * eps_k) - KL(q(z|y) || p(z))``, the ``eps_k`` ``[K, Z]``
    fixed (:data:`ELBO_SEED`), the KL analytic."""
    from npvae_tf.core.backend import tf, tfp

    eps = np.random.default_rng(ELBO_SEED).standard_normal((ELBO_DRAWS, 1, z_dim))
    eps = tf.constant(eps, tf.float32)                                  # [K, 1, Z]
    scores = []
    for start in range(0, len(images), ELBO_BATCH):
        y = tf.constant(images[start:start + ELBO_BATCH])               # [B, P]
        q = model.approx_posterior(y)
        z = q.mean()[None] + q.stddev()[None] * eps                      # [K, B, Z]
        log_p = model.decoder_likelihood(tf.reshape(z, [-1, z_dim])).log_prob(
            tf.tile(y, [ELBO_DRAWS, 1]))                                # [K * B], k-major
        kl = tfp.distributions.kl_divergence(q, model.prior)            # [B]
        scores.append(tf.reduce_mean(tf.reshape(log_p, [ELBO_DRAWS, -1]), 0) - kl)
    if not scores:
        return np.zeros(0)
    return np.concatenate([s.numpy() for s in scores]).astype(np.float64)
