"""NPVAE, the scikit-learn estimator (npvae_tf/serving/estimator.py): scikit-learn's estimator
checks, shapes and units, pickling, run folders, pipelines, scores and bad input."""

import gc
import json
import os
import pickle
import shutil

import joblib
import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import npvae_tf
from npvae_tf.serving.estimator import NPVAE
from tests.helpers import synthetic_digits

TINY = dict(epochs=1, hidden=(16,), z_dim=2, batch_size=8)
SMALL = dict(epochs=3, hidden=(32,), z_dim=4, batch_size=32)


@parametrize_with_checks([NPVAE(**TINY)], expected_failed_checks=NPVAE.expected_failed_checks)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


# --- fitted estimators, shared -------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    """uint8 images ``[200, 8, 8]`` (values 0 and 255) and their labels."""
    return synthetic_digits(200, seed=0, size=8)


@pytest.fixture(scope="module")
def fitted(digits, tmp_path_factory):
    """An NPVAE fitted on the digits in a run folder of its own choosing (kept)."""
    images, labels = digits
    run_dir = str(tmp_path_factory.mktemp("estimator") / "run")
    return NPVAE(**SMALL, random_state=1, run_dir=run_dir).fit(images, labels)


@pytest.fixture(scope="module")
def table():
    """A real-valued table ``[300, 5]`` far from [0, 1]: columns of means 100..500, sd 1..5,
    correlated through a 1-D factor."""
    rng = np.random.default_rng(0)
    factor = rng.normal(size=(300, 1))
    means, sds = np.arange(1, 6) * 100.0, np.arange(1, 6, dtype=float)
    return means + sds * (0.8 * factor + 0.6 * rng.normal(size=(300, 5)))


@pytest.fixture(scope="module")
def fitted_table(table):
    return NPVAE(**SMALL).fit(table)


# --- shapes and units --------------------------------------------------------------------------

def test_fit_transform_shapes_and_fitted_attributes(fitted, digits):
    images, _ = digits
    x = fitted.transform(images)
    assert x.shape == (200, 2) and x.dtype == np.float32 and np.all(np.isfinite(x))
    # The last tenth validates (the serving lengthscale); the rest is the reference set, at
    # f(y). transform places every example, training ones too, by the served rule (the
    # default neighbour scheme: the median X of its 15 nearest training examples).
    assert fitted.embedding_.shape == (180, 2)
    np.testing.assert_allclose(fitted.embedding_, fitted.run_.embed(images[:180].reshape(180, -1)
                                                                    / 255.0), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(x, fitted.run_.place(images.reshape(200, -1) / 255.0))
    assert fitted.n_features_in_ == 64 and not hasattr(fitted, "feature_names_in_")
    assert fitted.run_dir_ == fitted.run_.path and os.path.isdir(fitted.run_dir_)
    assert list(fitted.get_feature_names_out()) == ["npvae0", "npvae1"]
    # Flattened examples are the same examples.
    np.testing.assert_array_equal(fitted.transform(images.reshape(200, -1)), x)


def test_inverse_transform_and_sample_return_the_data_shape_and_units(fitted, digits):
    images, _ = digits
    decoded = fitted.inverse_transform(fitted.transform(images[:10]))
    assert decoded.shape == (10, 8, 8) and decoded.dtype == np.float32
    # uint8 data is in bytes: decoded means come back in 0..255, not [0, 1].
    assert decoded.min() >= 0 and decoded.max() <= 255 and decoded.max() > 1
    samples = fitted.sample(5, random_state=0)
    assert samples.shape == (5, 8, 8)
    np.testing.assert_array_equal(samples, fitted.sample(5, random_state=0))
    assert fitted.sample(3).shape == (3, 8, 8)


def test_gaussian_table_round_trips_in_its_own_units(fitted_table, table):
    assert fitted_table.run_.config.likelihood == "gaussian"  # chosen: values beyond [0, 1]
    decoded = fitted_table.inverse_transform(fitted_table.transform(table))
    assert decoded.shape == table.shape
    # Decoded means are in the table's units (means 100..500), not standardised ones.
    np.testing.assert_allclose(decoded.mean(axis=0), table.mean(axis=0),
                               atol=2 * table.std(axis=0).max())
    assert fitted_table.sample(4, random_state=0).shape == (4, 5)


def test_score_is_finite_and_higher_for_training_like_data_than_noise(fitted, digits):
    images, _ = digits
    scores = fitted.score_samples(images)
    assert scores.shape == (200,) and np.all(np.isfinite(scores))
    assert fitted.score(images) == pytest.approx(scores.mean())
    # A score depends on the example alone (the same draws for all examples).
    np.testing.assert_allclose(fitted.score_samples(images[5:7]), scores[5:7], rtol=1e-5)
    noise = np.random.default_rng(1).integers(0, 256, images.shape).astype(np.uint8)
    assert fitted.score(images) > fitted.score(noise)


def test_score_of_a_gaussian_table_is_a_density_in_its_own_units(fitted_table, table):
    scores = fitted_table.score_samples(table)
    assert np.all(np.isfinite(scores))
    # The same data in units 10 times larger: log-density lower by log(10) per column.
    rescaled = NPVAE(**SMALL).fit(table * 10.0)
    np.testing.assert_allclose(rescaled.score(table * 10.0),
                               fitted_table.score(table) - 5 * np.log(10.0), atol=1.0)


# --- pickling, loading and run folders ----------------------------------------------------------

def test_pickle_round_trip_is_identical_and_outlives_the_run_folder(digits, tmp_path):
    images, _ = digits
    run_dir = str(tmp_path / "run")
    estimator = NPVAE(**TINY, run_dir=run_dir).fit(images[:40])
    x = estimator.transform(images)
    decoded = estimator.inverse_transform(x[:7])
    embedding = estimator.embedding_.copy()
    assert embedding.shape == (36, 2)
    blob = pickle.dumps(estimator)
    del estimator
    shutil.rmtree(run_dir)  # the pickle carries the run folder's files, not its path
    copy = pickle.loads(blob)
    assert copy.run_dir_ != run_dir and os.path.isdir(copy.run_dir_)
    np.testing.assert_array_equal(copy.transform(images), x)
    np.testing.assert_array_equal(copy.inverse_transform(x[:7]), decoded)
    np.testing.assert_array_equal(copy.embedding_, embedding)
    path = os.path.join(str(tmp_path), "npvae.joblib")
    joblib.dump(copy, path)
    again = joblib.load(path)
    np.testing.assert_array_equal(again.transform(images), x)
    folder = again.run_dir_
    del again
    gc.collect()
    assert not os.path.exists(folder)  # a copy's folder is its own, removed with it


def test_an_own_temporary_folder_is_removed_on_refit_and_collection(digits):
    images, _ = digits
    # The smallest data the splits allow: 2 to validate, 2 to train.
    estimator = NPVAE(**TINY)
    assert estimator.fit_transform(images[:4]).shape == (4, 2)
    first = estimator.run_dir_
    estimator.fit(images[20:40])
    second = estimator.run_dir_
    assert not os.path.exists(first) and os.path.isdir(second)
    del estimator
    gc.collect()
    assert not os.path.exists(second)


def test_load_gives_the_fitted_estimator(fitted, digits):
    images, _ = digits
    loaded = NPVAE.load(fitted.run_dir_)
    # The run's settings, the likelihood as the fit chose it.
    assert loaded.get_params() == {**fitted.get_params(), "likelihood": "bernoulli"}
    assert loaded.scheme == "neighbour" and loaded.run_dir_ == fitted.run_dir_
    np.testing.assert_array_equal(loaded.transform(images), fitted.transform(images))
    np.testing.assert_array_equal(loaded.embedding_, fitted.embedding_)
    x = fitted.transform(images[:5])
    np.testing.assert_array_equal(loaded.inverse_transform(x), fitted.inverse_transform(x))
    np.testing.assert_array_equal(loaded.score_samples(images), fitted.score_samples(images))


def test_a_run_dir_resumes_its_own_data_and_refuses_other_data(fitted, digits):
    images, labels = digits
    same = NPVAE(**fitted.get_params()).fit(images, labels)  # finished: loaded, not retrained
    np.testing.assert_array_equal(same.embedding_, fitted.embedding_)
    with pytest.raises(ValueError, match="other data"):
        NPVAE(**fitted.get_params()).fit(images[::-1], labels[::-1])


def test_a_kept_run_folder_finds_its_data_again_for_evaluation(fitted, digits):
    """The arrays of a fit into a folder of the user's are kept there, under data.json's
    fingerprint: evaluate.py and export.py read them as from any data file."""
    from npvae_tf.runs.load import load_run, training_data

    images, labels = digits
    with open(os.path.join(fitted.run_dir_, "data.json")) as f:
        recorded = json.load(f)
    assert recorded["source"] == os.path.join(fitted.run_dir_, "fit_data.npz")
    dataset = training_data(load_run(fitted.run_dir_))  # checks the recorded SHA-256
    assert dataset.sha256 == recorded["sha256"]
    n = len(dataset.train) + len(dataset.validation)
    np.testing.assert_array_equal(dataset.train.labels, labels[:len(dataset.train)])
    assert n == 200


def test_the_default_neighbour_scheme_places_and_paper_embeds(digits):
    images, labels = digits
    assert NPVAE().scheme == "neighbour"  # the recommended scheme
    model = NPVAE(**TINY).fit(images[:80], labels[:80])
    x = model.transform(images[80:90])
    np.testing.assert_array_equal(x, model.run_.place(images[80:90].reshape(10, -1) / 255.0))
    assert not np.allclose(x, model.run_.embed(images[80:90].reshape(10, -1) / 255.0))
    paper = NPVAE(**TINY, scheme="paper").fit(images[:80], labels[:80])
    np.testing.assert_allclose(paper.transform(images[:72]), paper.embedding_, atol=1e-5)


# --- pipelines and the package -----------------------------------------------------------------

def test_pipeline_with_a_scaler(table):
    pipeline = Pipeline([("scale", StandardScaler()),
                         ("npvae", NPVAE(likelihood="gaussian", **TINY))])
    x = pipeline.fit_transform(table)
    assert x.shape == (300, 2) and np.all(np.isfinite(x))
    np.testing.assert_array_equal(pipeline.transform(table), x)
    assert np.isfinite(pipeline.score(table))


def test_exported_by_the_package():
    assert npvae_tf.NPVAE is NPVAE and "NPVAE" in npvae_tf.__all__


def test_dataframe_columns_are_feature_names(table):
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(table, columns=[f"c{i}" for i in range(5)])
    estimator = NPVAE(**TINY).fit(frame)
    assert list(estimator.feature_names_in_) == list(frame.columns)
    assert estimator.transform(frame).shape == (300, 2)


# --- bad input ---------------------------------------------------------------------------------

def test_bad_input_raises_what_users_expect(fitted, digits):
    images, _ = digits
    with pytest.raises(NotFittedError):
        NPVAE().transform(images)
    with pytest.raises(NotFittedError):
        NPVAE().inverse_transform(np.zeros((2, 2)))
    bad = images.astype(np.float32)
    bad[3, 2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fitted.transform(bad)
    with pytest.raises(ValueError, match="NaN"):
        NPVAE(**TINY).fit(bad)
    with pytest.raises(ValueError, match="features"):
        fitted.transform(np.zeros((4, 63)))
    with pytest.raises(ValueError, match="shape"):
        fitted.transform(np.zeros((4, 4, 16)))
    with pytest.raises(ValueError, match="coordinates"):
        fitted.inverse_transform(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        fitted.inverse_transform(np.full((1, 2), np.nan))


def test_settings_and_sizes_are_checked_when_fitting(digits):
    images, _ = digits
    with pytest.raises(ValueError, match="at least 4 examples"):
        NPVAE(**TINY).fit(images[:3])
    with pytest.raises(ValueError, match="scheme must be one of"):
        NPVAE(scheme="vae", **TINY).fit(images)
    with pytest.raises(ValueError, match="scheme must be one of"):
        NPVAE(scheme="nonsense", **TINY).fit(images)
    with pytest.raises(ValueError, match="y must be"):
        NPVAE(**TINY).fit(images, np.zeros(3))
