"""SavedModel export (npvae_tf/serving/export.py, export.py): signatures, input checks, atomic writes.

The live model is the run folder's own ``model.keras`` loaded with Keras; the export is loaded
with TensorFlow alone, in a fresh process that cannot import npvae_tf.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from npvae_tf.runs.load import load_run
from npvae_tf.serving.export import export_run
from npvae_tf.serving.folders import INFO_FILE, ExportError, atomic_write_dir
from npvae_tf.serving.module import MAX_SAMPLE_COUNT, QUERY_BLOCK, ServingModule, mixture_sample
from npvae_tf.runs.x_density import mixture_parameters
from npvae_tf.runs.reference import ReferenceSet
from npvae_tf.runs.layout import TEST_METRICS_FILE, MODEL_FILE
from npvae_tf.runs.x_density import X_DENSITY_FILE, XDensity
from tests.helpers import ROOT, digit_images, make_run

P = 784
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    images, labels = digit_images(500, 0)
    out = {}
    for kind, settings in (("npvae", dict(z_dim=8)), ("vae", dict(model="vae", z_dim=6))):
        run = str(root / f"run-{kind}")
        make_run(run, images, labels, **settings)
        # Chunks of 128 over 500 reference points: several chunks, and padding in the last.
        export = export_run(run, str(root / f"export-{kind}"), chunk_size=128)
        loaded = load_run(run)
        out[kind] = types.SimpleNamespace(run=run, export=export, model=loaded.model,
                                          reference=loaded.reference if loaded.has_x else None)
    return out


@pytest.fixture(scope="module")
def loaded(runs):
    return {kind: tf.saved_model.load(r.export) for kind, r in runs.items()}


# --- served by TensorFlow alone --------------------------------------------------------------
CHILD = r'''
import importlib.abc, json, sys
import numpy as np

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("npvae_tf", "tensorflow_probability"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)")
        return None

sys.meta_path.insert(0, Blocked())
import tensorflow as tf

for export_dir, calls_path, arrays_path, out_path in json.load(open(sys.argv[1])):
    loaded = tf.saved_model.load(export_dir)
    arrays = np.load(arrays_path)
    results = {}
    for tag, signature, arguments in json.load(open(calls_path)):
        kwargs = {name: tf.constant(arrays[value]) if isinstance(value, str)
                  else tf.constant(value[1], getattr(tf, value[0]))
                  for name, value in arguments.items()}
        for name, tensor in loaded.signatures[signature](**kwargs).items():
            results[f"{tag}/{name}"] = tensor.numpy()
    np.savez(out_path, signatures=np.array(sorted(loaded.signatures)), **results)
try:
    import npvae_tf
except ModuleNotFoundError:
    print("npvae_tf not importable")
'''


def serve_in_fresh_process(tmp_path, jobs):
    """jobs: {kind: (export_dir, calls, arrays)} -> {kind: outputs}; runs one subprocess."""
    spec = []
    for kind, (export_dir, calls, arrays) in jobs.items():
        np.savez(tmp_path / f"{kind}-in.npz", **arrays)
        (tmp_path / f"{kind}-calls.json").write_text(json.dumps(calls))
        spec.append([export_dir, str(tmp_path / f"{kind}-calls.json"),
                     str(tmp_path / f"{kind}-in.npz"), str(tmp_path / f"{kind}-out.npz")])
    (tmp_path / "jobs.json").write_text(json.dumps(spec))
    (tmp_path / "child.py").write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [sys.executable, str(tmp_path / "child.py"), str(tmp_path / "jobs.json")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=str(tmp_path), env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "npvae_tf not importable" in result.stdout
    return {kind: dict(np.load(tmp_path / f"{kind}-out.npz")) for kind in jobs}


def calls_for(signatures, batch):
    calls = []
    for b in (1, batch):
        for name in ("serving_default", "reconstruct", "encode"):
            calls.append([f"{name}-{b}", name, {"images": f"images-{b}"}])
        calls.append([f"decode-{b}", "decode", {"z": f"z-{b}"}])
        if "generate_from_x" in signatures:
            calls.append([f"generate_from_x-{b}", "generate_from_x", {"x": f"x-{b}"}])
        calls.append([f"sample-{b}", "sample", {"count": ["int32", b], "seed": ["int64", 7]}])
    calls.append(["sample-again", "sample", {"count": ["int32", batch], "seed": ["int64", 7]}])
    calls.append(["sample-other", "sample", {"count": ["int32", batch], "seed": ["int64", 8]}])
    return calls


def test_fresh_process_without_npvae_tf_serves_every_signature_like_the_live_model(runs, tmp_path):
    batch = 1000
    images, _ = digit_images(batch, 3)
    rng = np.random.default_rng(0)
    jobs = {}
    for kind, r in runs.items():
        arrays = {"images-1": images[:1], f"images-{batch}": images,
                  f"z-{batch}": rng.normal(size=(batch, r.model.z_dim)).astype(np.float32)}
        arrays["z-1"] = arrays[f"z-{batch}"][:1]
        if kind == "npvae":
            x_ref = r.reference.x
            noise = 0.2 * x_ref.std() * rng.normal(size=(batch, 2))
            x = x_ref[rng.integers(0, len(x_ref), batch)] + noise
            x[:20] = x_ref.mean(0) + 3 * (x[:20] - x_ref.mean(0))  # outside the data too
            arrays[f"x-{batch}"] = x.astype(np.float32)
            arrays["x-1"] = arrays[f"x-{batch}"][:1]
        signatures = ("generate_from_x",) if kind == "npvae" else ()
        jobs[kind] = (r.export, calls_for(signatures, batch), arrays)
    served = serve_in_fresh_process(tmp_path, jobs)

    for kind, r in runs.items():
        out, arrays, model = served[kind], jobs[kind][2], r.model
        expected = ["decode", "encode", "reconstruct", "sample", "serving_default"]
        if kind == "npvae":
            expected += ["generate_from_x", "reconstruct_through_x"]
        assert sorted(out["signatures"]) == sorted(expected)
        for b in (1, batch):
            y, z = arrays[f"images-{b}"], arrays[f"z-{b}"]
            live = model(y).numpy()
            assert out[f"reconstruct-{b}/images"].shape == (b, P)
            np.testing.assert_allclose(out[f"reconstruct-{b}/images"], live, **TOL)
            np.testing.assert_allclose(out[f"serving_default-{b}/images"], live, **TOL)
            q = model.approx_posterior(y)
            np.testing.assert_allclose(out[f"encode-{b}/z_mean"], q.mean().numpy(), **TOL)
            np.testing.assert_allclose(out[f"encode-{b}/z_stddev"], q.stddev().numpy(), **TOL)
            np.testing.assert_allclose(out[f"decode-{b}/images"], model.decode(z).numpy(), **TOL)
            assert out[f"sample-{b}/images"].shape == (b, P)
            if kind == "npvae":
                ref = r.reference
                np.testing.assert_allclose(out[f"encode-{b}/x"], model.embed(y).numpy(), **TOL)
                x = arrays[f"x-{b}"]
                np.testing.assert_allclose(out[f"generate_from_x-{b}/images"],
                                           model.decode_from_x(x, ref.x, ref.z_mean).numpy(), **TOL)
                z_tilde = model.predictive_mean(x, ref.x, ref.z_mean).numpy()
                np.testing.assert_allclose(out[f"generate_from_x-{b}/z"], z_tilde, **TOL)
                xs = out[f"sample-{b}/x"]
                live_sample = model.decode_from_x(xs, ref.x, ref.z_mean).numpy()
                np.testing.assert_allclose(out[f"sample-{b}/images"], live_sample, **TOL)
            else:
                assert "encode-1/x" not in out
                np.testing.assert_allclose(out[f"sample-{b}/images"],
                                           model.decode(out[f"sample-{b}/z"]).numpy(), **TOL)
        # Seeded: the same (count, seed) gives the same images, another seed others.
        np.testing.assert_array_equal(out["sample-again/images"], out[f"sample-{batch}/images"])
        assert not np.allclose(out["sample-other/images"], out[f"sample-{batch}/images"])


@pytest.mark.parametrize("jit_compile", [True, False])
def test_generate_from_x_in_blocks_matches_the_live_model(runs, jit_compile):
    # More than two blocks of QUERY_BLOCK queries plus a remainder padded to a bucket.
    r = runs["npvae"]
    n = 2 * QUERY_BLOCK + 52
    rng = np.random.default_rng(2)
    x = (r.reference.x[rng.integers(0, 500, n)] + rng.normal(size=(n, 2)) * 0.1).astype(np.float32)
    module = ServingModule(r.model, r.reference, chunk_size=96, jit_compile=jit_compile)
    out = module.generate_from_x(tf.constant(x))
    live = r.model.predictive_mean(x, r.reference.x, r.reference.z_mean)
    np.testing.assert_allclose(out["z"].numpy(), live.numpy(), **TOL)
    np.testing.assert_allclose(out["images"].numpy(), r.model.decode(live).numpy(), **TOL)


def mixture_moments(weights, means, scale_tril):
    """Mean and covariance of sum_c w_c N(mu_c, L_c L_c^T)."""
    mean = weights @ means
    second = np.einsum("c,cij->ij", weights, scale_tril @ scale_tril.transpose(0, 2, 1)
                       + means[:, :, None] * means[:, None, :])
    return mean, second - np.outer(mean, mean)


def test_npvae_samples_follow_the_evaluation_density_over_x(runs, loaded):
    ref = runs["npvae"].reference
    sample = loaded["npvae"].signatures["sample"]
    x = sample(count=tf.constant(4000), seed=tf.constant(5, tf.int64))["x"].numpy()
    density = mixture_parameters(XDensity.load(runs["npvae"].run))
    # The mixture training stored in the run folder (evaluation samples it too).
    np.testing.assert_allclose(x, mixture_sample(**density, count=4000, seed=5).numpy(), **TOL)
    mean, cov = mixture_moments(**{k: v.astype(np.float64) for k, v in density.items()})
    np.testing.assert_allclose(x.mean(0), mean, atol=4 * np.sqrt(cov.diagonal().max() / 4000))
    np.testing.assert_allclose(np.cov(x, rowvar=False), cov, rtol=0.15,
                               atol=0.15 * np.abs(cov).max())
    # A mixture fitted to X has X's moments.
    np.testing.assert_allclose(mean, ref.x.mean(0), atol=1e-3 * np.abs(ref.x).max())
    np.testing.assert_allclose(cov, np.cov(ref.x, rowvar=False), rtol=0.05,
                               atol=0.05 * np.abs(cov).max())


def test_mixture_sample_draws_each_component_with_its_weight_and_shape():
    weights = np.array([0.25, 0.75], np.float32)
    means = np.array([[-100.0, 0.0], [100.0, 0.0]], np.float32)
    scale_tril = np.array([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [1.0, 0.5]]], np.float32)
    x = mixture_sample(weights, means, scale_tril, 20000, 3).numpy()
    right = x[:, 0] > 0
    assert right.mean() == pytest.approx(0.75, abs=0.02)
    np.testing.assert_allclose(x[~right].mean(0), means[0], atol=0.1)
    np.testing.assert_allclose(np.cov(x[right], rowvar=False), scale_tril[1] @ scale_tril[1].T,
                               rtol=0.1, atol=0.05)
    np.testing.assert_array_equal(x, mixture_sample(weights, means, scale_tril, 20000, 3).numpy())


def test_vae_samples_decode_the_prior(loaded):
    out = loaded["vae"].signatures["sample"](count=tf.constant(3000), seed=tf.constant(1, tf.int64))
    z = out["z"].numpy()
    assert z.shape == (3000, 6)
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05


def test_saved_model_cli_lists_every_signature(runs):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run([cli, "show", "--dir", runs["npvae"].export, "--all"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    listed = set(re.findall(r"signature_def\['(\w+)'\]", result.stdout))
    assert {"serving_default", "reconstruct", "encode", "decode", "generate_from_x",
            "sample"} <= listed
    # Outputs have a dynamic batch size; inputs a dynamic width too, checked when run.
    assert "shape: (-1, 784)" in result.stdout and "shape: (-1, 2)" in result.stdout
    # Inputs have an unknown shape, checked when run (a wrong rank from NumPy reaches the check)
    assert "shape: unknown_rank" in result.stdout and "shape: (-1, -1)" not in result.stdout
    # Only the signatures are saved as functions: no internal helper is listed.
    functions = set(re.findall(r"Function Name: '(\w+)'", result.stdout))
    assert functions == {"reconstruct", "encode", "decode", "generate_from_x", "sample",
                         "reconstruct_through_x"}


SESSION_CHILD = r"""
import json, sys, traceback
import numpy as np
from tensorflow.python.tools import saved_model_cli

# The function `saved_model_cli run` calls: the session-style (TF1 / C++) loader TensorFlow
# Serving uses, then Session.run on the signature's tensors.
errors = {}
for export_dir, signature, feeds, outdir in json.load(open(sys.argv[1])):
    arrays = {k: np.load(v) for k, v in feeds.items()}
    try:
        saved_model_cli.run_saved_model_with_feed_dict(export_dir, "serve", signature, arrays,
                                                       outdir, True)
    except Exception as e:
        errors[outdir] = f"{type(e).__name__}: {e}"
json.dump(errors, open(sys.argv[2], "w"))
"""


def test_every_signature_runs_under_the_session_style_loader_like_the_live_model(runs, tmp_path):
    images, _ = digit_images(5, 6)
    rng = np.random.default_rng(1)
    feeds = {"images": images, "count": np.array(4, np.int32), "seed": np.array(9, np.int64),
             "bad_images": images[:, :-1], "x": rng.normal(size=(5, 2)).astype(np.float32),
             "shaped_images": images.reshape(-1, 28, 28)}  # the data's own shape
    for kind, r in runs.items():
        feeds[f"z_{kind}"] = rng.normal(size=(5, r.model.z_dim)).astype(np.float32)
    for name, value in feeds.items():
        np.save(tmp_path / f"{name}.npy", value)
    path = {name: str(tmp_path / f"{name}.npy") for name in feeds}
    jobs = []
    for kind, r in runs.items():
        signature_inputs = {"serving_default": {"images": path["images"]},
                            "reconstruct": {"images": path["images"]},
                            "encode": {"images": path["images"]},
                            "decode": {"z": path[f"z_{kind}"]},
                            "sample": {"count": path["count"], "seed": path["seed"]},
                            "bad_width": {"images": path["bad_images"]},
                            "shaped": {"images": path["shaped_images"]}}
        if kind == "npvae":
            signature_inputs["generate_from_x"] = {"x": path["x"]}
        for name, inputs in signature_inputs.items():
            signature = {"bad_width": "encode", "shaped": "reconstruct"}.get(name, name)
            jobs.append([r.export, signature, inputs, str(tmp_path / f"out-{kind}-{name}")])
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    (tmp_path / "child.py").write_text(SESSION_CHILD)
    result = subprocess.run([sys.executable, str(tmp_path / "child.py"), str(tmp_path / "jobs.json"),
                             str(tmp_path / "errors.json")], capture_output=True, text=True,
                            cwd=str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    errors = json.loads((tmp_path / "errors.json").read_text())
    for kind, r in runs.items():
        bad = errors.pop(str(tmp_path / f"out-{kind}-bad_width"))
        assert bad.startswith("InvalidArgumentError") and "images must be [N, 784]" in bad
    assert errors == {}  # every other signature ran

    def out(kind, name, key):
        return np.load(tmp_path / f"out-{kind}-{name}" / f"{key}.npy")

    for kind, r in runs.items():
        model = r.model
        live = model(images).numpy()
        np.testing.assert_allclose(out(kind, "serving_default", "images"), live, **TOL)
        np.testing.assert_allclose(out(kind, "reconstruct", "images"), live, **TOL)
        np.testing.assert_allclose(out(kind, "shaped", "images"), live, **TOL)
        np.testing.assert_allclose(out(kind, "encode", "z_mean"),
                                   model.approx_posterior(images).mean().numpy(), **TOL)
        np.testing.assert_allclose(out(kind, "decode", "images"),
                                   model.decode(feeds[f"z_{kind}"]).numpy(), **TOL)
        assert out(kind, "sample", "images").shape == (4, P)
        if kind == "npvae":
            ref = r.reference
            np.testing.assert_allclose(out(kind, "encode", "x"), model.embed(images).numpy(),
                                       **TOL)
            np.testing.assert_allclose(out(kind, "generate_from_x", "images"),
                                       model.decode_from_x(feeds["x"], ref.x, ref.z_mean).numpy(),
                                       **TOL)
            np.testing.assert_allclose(
                out(kind, "sample", "images"),
                model.decode_from_x(out(kind, "sample", "x"), ref.x, ref.z_mean).numpy(), **TOL)


def test_saved_model_cli_run_command_serves_generate_from_x(runs, tmp_path):
    r = runs["npvae"]
    x = r.reference.x[:3] + 0.1
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run([cli, "run", "--dir", r.export, "--tag_set", "serve",
                             "--signature_def", "generate_from_x", "--inputs",
                             f"x={tmp_path / 'x.npy'}", "--outdir", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(
        np.load(tmp_path / "out" / "images.npy"),
        r.model.decode_from_x(x, r.reference.x, r.reference.z_mean).numpy(), **TOL)


def saved_graph_functions(export_dir):
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    return list(saved.meta_graphs[0].graph_def.library.function)


def test_default_export_has_no_xla_and_names_its_random_algorithm(runs):
    functions = saved_graph_functions(runs["npvae"].export)
    assert not [f.signature.name for f in functions if f.attr["_XlaMustCompile"].b]
    draws = 0
    for f in functions:
        nodes = {n.name: n for n in f.node_def}
        for node in f.node_def:
            # Auto-selected algorithms (and stateless_categorical) depend on the device.
            assert node.op not in ("StatelessMultinomial", "StatelessRandomGetKeyCounter")
            if node.op.startswith("StatelessRandom") and node.op.endswith("V2"):
                alg = nodes[node.input[-1].split(":")[0]]
                assert alg.op == "Const" and list(alg.attr["value"].tensor.int_val) == [1]  # Philox
                draws += 1
    assert draws >= 2


def test_xla_export_compiles_the_kernel_and_serves_the_same(runs, tmp_path):
    r = runs["npvae"]
    export = export_run(r.run, str(tmp_path / "xla"), chunk_size=128, jit_compile=True)
    assert any(f.attr["_XlaMustCompile"].b for f in saved_graph_functions(export))
    x = (r.reference.x[:40] + 0.05).astype(np.float32)
    served = tf.saved_model.load(export).signatures["generate_from_x"](x=x)["images"].numpy()
    np.testing.assert_allclose(served, r.model.decode_from_x(x, r.reference.x,
                                                             r.reference.z_mean).numpy(), **TOL)
    assert json.load(open(os.path.join(export, INFO_FILE)))["jit_compile"] is True


def test_export_serves_the_lengthscale_recorded_in_the_reference_set(runs, tmp_path):
    import dataclasses

    r = runs["npvae"]
    run = tmp_path / "run"
    shutil.copytree(r.run, run)
    learned = float(r.model.kernel.lengthscale.numpy())
    chosen = 0.25 * learned
    dataclasses.replace(r.reference, lengthscale=chosen).save(str(run))
    export = export_run(str(run), str(tmp_path / "export"))
    x = (r.reference.x[:50] + 0.05).astype(np.float32)
    served = tf.saved_model.load(export).signatures["generate_from_x"](x=x)["images"].numpy()
    ref = r.reference
    expected = r.model.decode_from_x(x, ref.x, ref.z_mean, lengthscale=chosen).numpy()
    np.testing.assert_allclose(served, expected, **TOL)
    # A different lengthscale gives different images here, so the check above can fail.
    assert np.abs(r.model.decode_from_x(x, ref.x, ref.z_mean).numpy() - expected).max() > 1e-3
    info = json.load(open(os.path.join(export, INFO_FILE)))
    assert info["lengthscale"] == pytest.approx(chosen)
    assert info["learned_lengthscale"] == pytest.approx(learned)


def test_export_samples_the_density_stored_in_the_run_folder(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["npvae"].run, run)
    stored = XDensity.load(str(run))
    far = XDensity(stored.weights, stored.means + 1000.0, stored.covariances, stored.fit_seed)
    far.save(str(run))
    export = export_run(str(run), str(tmp_path / "export"))
    x = tf.saved_model.load(export).signatures["sample"](
        count=tf.constant(500), seed=tf.constant(1, tf.int64))["x"].numpy()
    np.testing.assert_allclose(x.mean(0), runs["npvae"].reference.x.mean(0) + 1000.0, atol=50.0)
    info = json.load(open(os.path.join(export, INFO_FILE)))
    np.testing.assert_allclose(info["x_density"]["means"], far.means, rtol=1e-6)
    (run / X_DENSITY_FILE).write_bytes(b"not a zip file")
    with pytest.raises(ExportError, match="cannot read the density over X"):
        export_run(str(run), str(tmp_path / "export2"))


def test_vae_export_has_no_generate_from_x(loaded, runs):
    assert sorted(loaded["vae"].signatures) == ["decode", "encode", "reconstruct", "sample",
                                                "serving_default"]
    info = json.load(open(os.path.join(runs["vae"].export, INFO_FILE)))
    assert info["model"] == "vae" and info["config"]["z_dim"] == 6


def test_edge_inputs_are_served(loaded):
    signatures = loaded["npvae"].signatures
    extremes = np.zeros((2, P), np.float32)
    extremes[1] = 1.0  # exactly 0 and 1 are valid pixels
    assert signatures["encode"](images=extremes)["z_mean"].shape == (2, 8)
    assert signatures["reconstruct"](images=np.zeros((0, P), np.float32))["images"].shape == (0, P)
    assert signatures["generate_from_x"](x=np.zeros((0, 2), np.float32))["images"].shape == (0, P)
    empty = signatures["sample"](count=tf.constant(0), seed=tf.constant(0, tf.int64))
    assert empty["images"].shape == (0, P)


# --- bad input ------------------------------------------------------------------------------
def _with(shape, value, dtype=np.float32):
    array = np.full(shape, 0.5, dtype)
    array[-1, -1] = value
    return array


def _count_seed(count=3, seed=0, count_dtype=tf.int32, seed_dtype=tf.int64):
    return {"count": tf.constant(count, count_dtype), "seed": tf.constant(seed, seed_dtype)}


SHAPE = "is not compatible with expected shape"
WIDTH = "wrong width"
NOT_FLOAT = "expected to be a float tensor"
BAD_INPUTS = [
    ("reconstruct", {"images": np.zeros((2, P - 1), np.float32)},
     f"images must be [N, {P}] or [N, 28, 28] ({P} values per example); wrong width"),
    ("reconstruct", {"images": np.zeros((P,), np.float32)}, f"images must be [N, {P}] or [N, 28, 28] ({P} values per example); wrong rank"),
    ("encode", {"images": np.zeros((2, 1, P), np.float32)}, f"images must be [N, {P}] or [N, 28, 28] ({P} values per example); wrong rank"),
    ("encode", {"images": np.zeros((2, 28, 27), np.float32)}, f"images must be [N, {P}] or [N, 28, 28] ({P} values per example); wrong rank"),
    ("encode", {"images": np.zeros((2, P), np.int32)}, NOT_FLOAT),
    ("serving_default", {"images": np.zeros((2, P), np.float64)}, NOT_FLOAT),
    ("encode", {"images": _with((2, P), np.nan)}, "images must be finite"),
    ("reconstruct", {"images": _with((2, P), np.inf)}, "images must be finite"),
    ("encode", {"images": _with((2, P), 1.5)}, "images must be pixel values in [0, 1]"),
    ("serving_default", {"images": _with((2, P), -0.01)}, "images must be pixel values in [0, 1]"),
    ("decode", {"z": np.zeros((2, 9), np.float32)}, "z must be [N, 8] (8 latent dimensions)"),
    ("decode", {"z": _with((2, 8), np.nan)}, "z must be finite"),
    ("decode", {"z": np.zeros((2, 8), np.int64)}, NOT_FLOAT),
    ("generate_from_x", {"x": np.zeros((2, 3), np.float32)}, "x must be [N, 2] (2 coordinates"),
    ("generate_from_x", {"x": np.zeros((2,), np.float32)}, "x must be [N, 2] (2 coordinates"),
    ("generate_from_x", {"x": _with((2, 2), np.nan)}, "x must be finite"),
    ("generate_from_x", {"x": _with((2, 2), -np.inf)}, "x must be finite"),
    ("generate_from_x", {"x": np.zeros((2, 2), np.int32)}, NOT_FLOAT),
    ("sample", _count_seed(count=-1), "count must be >= 0"),
    ("sample", _count_seed(count=MAX_SAMPLE_COUNT + 1), f"count must be <= {MAX_SAMPLE_COUNT}"),
    ("sample", _count_seed(count=3.0, count_dtype=tf.float32), "expected to be a int32 tensor"),
    ("sample", _count_seed(count=[2, 3]), SHAPE),
    ("sample", _count_seed(seed=[1, 2]), SHAPE),
]


@pytest.mark.parametrize("signature,kwargs,message", BAD_INPUTS,
                         ids=[f"{s}-{m[:20]}-{i}" for i, (s, _, m) in enumerate(BAD_INPUTS)])
def test_bad_input_is_rejected_with_a_clear_error(loaded, signature, kwargs, message):
    fn = loaded["npvae"].signatures[signature]
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
        fn(**{k: tf.constant(v) for k, v in kwargs.items()})


@pytest.mark.parametrize("signature,kwargs,message", [
    ("encode", {"images": _with((2, P), np.nan)}, "images must be finite"),
    ("reconstruct", {"images": _with((2, P), 2.0)}, "images must be pixel values in [0, 1]"),
    ("decode", {"z": np.zeros((2, 8), np.float32)},
     "z must be [N, 6] (6 latent dimensions); wrong width"),
    ("sample", _count_seed(count=-5), "count must be >= 0"),
])
def test_vae_export_rejects_bad_input(loaded, signature, kwargs, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(message)):
        loaded["vae"].signatures[signature](**{k: tf.constant(v) for k, v in kwargs.items()})


def test_restored_functions_check_their_input_signature(loaded):
    encode = loaded["npvae"].encode
    assert encode(tf.zeros([2, P]))["z_mean"].shape == (2, 8)
    with pytest.raises(tf.errors.InvalidArgumentError, match=WIDTH):
        encode(tf.zeros([2, P - 1]))
    with pytest.raises((TypeError, ValueError)):
        encode(tf.zeros([2, P], tf.int32))


@pytest.mark.parametrize("kind", ["npvae", "vae"])
def test_numpy_input_of_the_wrong_width_is_an_invalid_argument_naming_it(loaded, kind):
    # NumPy input goes through TensorFlow's Python binding first; a static width there
    # raised a TypeError printing the whole array instead.
    signatures = loaded[kind].signatures
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=re.escape(f"images must be [N, {P}] or [N, 28, 28] ({P} values")):
        signatures["encode"](images=np.zeros((2, P - 1), np.float32))
    z_dim = 8 if kind == "npvae" else 6
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(f"z must be [N, {z_dim}]")):
        signatures["decode"](z=np.zeros((2, z_dim + 1), np.float32))


@pytest.mark.parametrize("shape", [(3, 28, 27), (3, 1, 28, 28), (P,), ()])
def test_numpy_input_of_the_wrong_rank_is_one_invalid_argument_naming_it(loaded, shape):
    # The signatures' inputs have an unknown rank, so NumPy input of any rank reaches the
    # check instead of failing to bind (a TypeError of dozens of lines).
    reconstruct = loaded["npvae"].signatures["reconstruct"]
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        reconstruct(images=np.zeros(shape, np.float32))
    text = str(e.value)
    assert f"[images must be [N, {P}] or [N, 28, 28] ({P} values per example); wrong rank]" \
        in text, text[:500]
    assert len(text.splitlines()) <= 6, text  # TensorFlow's few lines, no Python traceback


def test_float64_numpy_input_is_cast_and_a_float64_tensor_rejected(loaded):
    reconstruct = loaded["npvae"].signatures["reconstruct"]
    images, _ = digit_images(3, 4)
    as_float32 = reconstruct(images=images)["images"].numpy()
    np.testing.assert_array_equal(reconstruct(images=images.astype(np.float64))["images"].numpy(),
                                  as_float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match=NOT_FLOAT):
        reconstruct(images=tf.constant(images, tf.float64))


# --- writing safely -------------------------------------------------------------------------
def test_atomic_write_dir_replaces_only_after_success(tmp_path):
    target = tmp_path / "out"

    def writer(text, fail=False):
        def write(folder):
            with open(os.path.join(folder, "a.txt"), "w") as f:
                f.write(text)
            if fail:
                raise RuntimeError("interrupted")
        return write

    atomic_write_dir(str(target), writer("1"))
    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_write_dir(str(target), writer("2", fail=True))
    assert (target / "a.txt").read_text() == "1"
    assert os.listdir(tmp_path) == ["out"]  # no temporary or set-aside folder left
    atomic_write_dir(str(target), writer("3"))
    assert (target / "a.txt").read_text() == "3"
    assert os.listdir(tmp_path) == ["out"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(target).st_mode & 0o777 == 0o777 & ~umask


def test_failed_export_keeps_the_previous_export(runs, tmp_path, monkeypatch):
    target = tmp_path / "serving"
    shutil.copytree(runs["vae"].export, target)
    before = (target / "saved_model.pb").read_bytes()

    def full_disk(module, folder, signatures=None, options=None):
        open(os.path.join(folder, "saved_model.pb"), "wb").write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(tf.saved_model, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        export_run(runs["vae"].run, str(target))
    assert (target / "saved_model.pb").read_bytes() == before
    assert os.listdir(tmp_path) == ["serving"]


def test_export_refuses_to_replace_a_folder_that_is_not_a_saved_model(runs, tmp_path):
    notes = tmp_path / "docs"
    notes.mkdir()
    (notes / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="is not a SavedModel; refusing to replace it"):
        export_run(runs["vae"].run, str(notes))
    assert (notes / "notes.txt").read_text() == "keep me"


def test_a_reference_set_that_does_not_fit_the_model_is_refused(runs):
    r = runs["npvae"]
    wrong_width = ReferenceSet(z_mean=r.reference.z_mean[:, :5], labels=r.reference.labels,
                               x=r.reference.x)
    with pytest.raises(ExportError, match="does not fit the model"):
        ServingModule(r.model, wrong_width)
    with pytest.raises(ExportError, match="NaN or Inf"):
        ServingModule(r.model, ReferenceSet(z_mean=r.reference.z_mean * np.nan,
                                            labels=r.reference.labels, x=r.reference.x))
    with pytest.raises(ExportError, match="needs a reference set"):
        ServingModule(r.model, None)


def test_export_of_an_unfinished_or_foreign_folder_fails_clearly(runs, tmp_path):
    with pytest.raises(ExportError, match="not a run folder"):
        export_run(str(tmp_path), str(tmp_path / "out"))
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(os.path.join(runs["npvae"].run, "config.json"), unfinished)
    with pytest.raises(ExportError, match="unfinished run, missing model.keras"):
        export_run(str(unfinished), str(tmp_path / "out"))
    shutil.copy(os.path.join(runs["npvae"].run, MODEL_FILE), unfinished)
    shutil.copy(os.path.join(runs["npvae"].run, TEST_METRICS_FILE), unfinished)
    with pytest.raises(ExportError, match="unfinished run, missing reference_set.npz"):
        export_run(str(unfinished), str(tmp_path / "out"))
    (unfinished / "reference_set.npz").write_bytes(b"not a zip file")
    with pytest.raises(ExportError, match="cannot load the reference set"):
        export_run(str(unfinished), str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")


# --- the command line -------------------------------------------------------------------------
def run_export_cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "export.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_cli_exports_a_run_over_an_earlier_export(runs, tmp_path):
    target = tmp_path / "serving"
    shutil.copytree(runs["vae"].export, target)  # an earlier export, replaced
    result = run_export_cli(runs["npvae"].run, "--out", str(target))
    assert result.returncode == 0, result.stderr[-3000:]
    assert str(target) in result.stdout and "generate_from_x" in result.stdout
    info = json.load(open(target / INFO_FILE))
    assert info["model"] == "npvae" and info["reference_size"] == 500
    assert info["image_shape"] == [28, 28] and info["image_dim"] == P
    assert info["run_dir"] == os.path.abspath(runs["npvae"].run)
    assert os.listdir(tmp_path) == ["serving"]


def load_cli():
    spec = importlib.util.spec_from_file_location("export_cli", os.path.join(ROOT, "export.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("make,message", [
    (lambda tmp, runs: str(tmp / "nothing"), "no such run folder"),
    (lambda tmp, runs: str(tmp), "not a run folder (no config.json)"),
    (lambda tmp, runs: os.path.dirname(shutil.copy(os.path.join(runs["vae"].run, "config.json"),
                                                   tmp)), "unfinished run, missing model.keras"),
])
def test_cli_bad_run_folder_gives_one_line_error(runs, tmp_path, capsys, make, message):
    # In-process (TensorFlow is loaded already); the exit path is the one a shell sees.
    with pytest.raises(SystemExit) as exit_info:
        load_cli().main([make(tmp_path, runs), "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("export.py: error: ") and message in err[0]
    assert not os.path.exists(tmp_path / "x")


def test_cli_rejects_a_bad_chunk_size(capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_cli().main(["run", "--chunk_size", "0"])
    assert exit_info.value.code == 2 and "must be a positive integer" in capsys.readouterr().err


def test_serving_benchmark_quick_mode_runs():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_serving.py"),
                             "--quick"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = re.findall(r"^(encode|generate_from_x)\s+(\d+)\s+\d+", result.stdout, re.M)
    assert sorted(set(rows)) == sorted({(s, str(b)) for s in ("encode", "generate_from_x")
                                        for b in (1, 64, 1024)})
    assert "export kernel chunk" in result.stdout and "max |p - live|" in result.stdout


@pytest.mark.parametrize("bench", ["bench_indexed_kernel", "bench_kernel_floor"])
@pytest.mark.parametrize("where", ["a folder of mine", "under a file"])
def test_kernel_benchmarks_refuse_a_bad_out_before_any_work(tmp_path, capsys, where, bench):
    import importlib

    benchmark = importlib.import_module(f"benchmarks.{bench}")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    out = mine if where == "a folder of mine" else mine / "notes.txt" / "results.json"
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert ": error: --out " in err[-1] and "Traceback" not in "\n".join(err)
    assert sorted(os.listdir(mine)) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep"


def test_export_serves_the_recorded_serving_lengthscale_and_the_sharp_decoder(tmp_path):
    """generate_from_x = the VAE's decoder at z~ with the lengthscale training recorded;
    reconstruct_through_x = the X path's own decoder there."""
    images, labels = digit_images(200, 3)
    run = str(tmp_path / "run")
    make_run(run, images, labels, z_dim=6, match_weight=0.0, x_path_weight=1.0,
             x_path_decoder="separate")
    model = keras.saving.load_model(os.path.join(run, MODEL_FILE))
    reference = ReferenceSet.load(run)
    serving = 0.05 * float(reference.x.std())  # the learned one is 0.2 std (make_run)
    ReferenceSet(z_mean=reference.z_mean, labels=reference.labels, x=reference.x,
                 lengthscale=serving).save(run)
    served = tf.saved_model.load(export_run(run, str(tmp_path / "export"), chunk_size=64))
    x = reference.x[:5] + 0.01
    got = served.signatures["generate_from_x"](x=tf.constant(x))["images"].numpy()
    z_tilde = model.predictive_mean(x, reference.x, reference.z_mean, lengthscale=serving)
    np.testing.assert_allclose(got, model.decode(z_tilde).numpy(), **TOL)
    learned = model.decode_from_x(x, reference.x, reference.z_mean).numpy()
    own = model.x_path_likelihood(z_tilde).mean().numpy()
    assert not np.allclose(got, learned, **TOL) and not np.allclose(got, own, **TOL)
    through = served.signatures["reconstruct_through_x"](images=tf.constant(images[:5]))
    x_f = model.embed(images[:5])  # placed by the encoder: not a neighbour scheme
    z_f = model.predictive_mean(x_f, reference.x, reference.z_mean, lengthscale=serving)
    np.testing.assert_allclose(through["x"].numpy(), x_f.numpy(), **TOL)
    np.testing.assert_allclose(through["images"].numpy(),
                               model.x_path_likelihood(z_f).mean().numpy(), **TOL)
    np.testing.assert_allclose(through["log_prob"].numpy(),
                               model.x_path_likelihood(z_f).log_prob(images[:5]).numpy(),
                               rtol=1e-5, atol=1e-3)


def test_cli_unwritable_out_fails_before_any_work(runs, tmp_path, capsys):
    from tests.helpers import unwritable_folder

    target = os.path.join(unwritable_folder(tmp_path), "serving")
    with pytest.raises(SystemExit) as exit_info:
        load_cli().main([runs["vae"].run, "--out", target])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"export.py: error: {target}: cannot write the export folder in "
        f"{os.path.dirname(target)} (")


def test_export_never_replaces_a_saved_model_it_did_not_write_or_one_with_user_files(runs,
                                                                                    tmp_path):
    foreign = tmp_path / "theirs"
    shutil.copytree(runs["vae"].export, foreign)
    os.remove(foreign / INFO_FILE)  # a SavedModel, but not written by export.py
    before = {p: open(os.path.join(foreign, p), "rb").read()
              for p in ("saved_model.pb",)}
    with pytest.raises(ExportError, match="holds a SavedModel export.py did not write"):
        export_run(runs["vae"].run, str(foreign))
    assert open(foreign / "saved_model.pb", "rb").read() == before["saved_model.pb"]
    ours = tmp_path / "ours"
    shutil.copytree(runs["vae"].export, ours)
    (ours / "README.txt").write_text("my notes")
    with pytest.raises(ExportError, match=r"holds files an export does not write "
                                          r"\(README.txt\)"):
        export_run(runs["vae"].run, str(ours))
    assert (ours / "README.txt").read_text() == "my notes"


def test_the_indexed_kernel_is_served_and_runs_under_saved_model_cli(tmp_path):
    """A reference set where the grid index is used: the SavedModel (loaded, and under
    saved_model_cli) matches the exact kernel, far queries included."""
    from npvae_tf.core.config import Config
    from npvae_tf.serving.export import export_model
    from npvae_tf.model.vae import build_model

    rng = np.random.default_rng(0)
    m = 6000
    x = (rng.normal(size=(m, 2)) * 10).astype(np.float32)
    z = rng.normal(size=(m, 8)).astype(np.float32)
    model = build_model(Config(z_dim=8, hidden=(16,)))
    ref = ReferenceSet(z_mean=z, labels=np.zeros(m, np.int64), x=x, lengthscale=0.3)
    assert ServingModule(model, ref).index is not None
    out = export_model(model, str(tmp_path / "e"), ref)
    q = np.concatenate([x[:300] + 0.2, [[1e5, 1e5], [-40, 3]]]).astype(np.float32)
    exact = ServingModule(model, ref, indexed=False).generate_from_x(q)["z"].numpy()
    served = tf.saved_model.load(out).signatures["generate_from_x"](x=tf.constant(q))["z"]
    assert np.abs(served.numpy() - exact).max() <= 1e-5 * np.abs(exact).max()
    np.save(tmp_path / "x.npy", q)
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    subprocess.run([cli, "run", "--dir", out, "--tag_set", "serve", "--signature_def",
                    "generate_from_x", "--inputs", f"x={tmp_path / 'x.npy'}", "--outdir",
                    str(tmp_path / "o")], check=True, capture_output=True, timeout=300)
    assert np.abs(np.load(tmp_path / "o" / "z.npy") - exact).max() <= 1e-5 * np.abs(exact).max()


@pytest.mark.parametrize("order", [None, "reversed"])
def test_the_reference_set_is_permuted_and_padded_with_zero_weight_rows(order):
    from npvae_tf.serving.module import _pad_reference

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 2)).astype(np.float32)
    z = rng.normal(size=(5, 3)).astype(np.float32)
    perm = None if order is None else np.arange(5)[::-1]
    x_pad, z_pad = _pad_reference(x, z, 4, perm)
    rows = np.arange(5) if perm is None else perm
    assert x_pad.shape == (8, 2) and z_pad.shape == (8, 3) and x_pad.dtype == np.float32
    np.testing.assert_array_equal(x_pad[:5], x[rows])
    np.testing.assert_array_equal(z_pad[:5], z[rows])
    assert np.all(x_pad[5:] == np.inf) and np.all(z_pad[5:] == 0)
