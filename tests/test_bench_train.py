"""benchmarks/bench_train.py: FLOP accounting, and --quick end to end (no timing checks)."""

import json
import math
import os
import re
import subprocess
import sys

import pytest

from benchmarks import bench_train
from npvae_tf.core.config import Config
from tests.helpers import ROOT, write_mnist_like

ROW_FIELDS = ("model", "z_dim", "jit_compile", "step_ms", "examples_per_s", "gflop_per_step",
              "matmul_gflop_per_step", "effective_gflops", "peak_gflops_at_shapes",
              "fraction_of_peak", "fraction_of_peak_range", "matmul_only_ms_tf",
              "matmul_only_ms_xla", "input_wait", "input_wait_blocked",
              "input_wait_epoch_start", "input_pipeline_cost_vs_memory",
              "breakdown_ms", "compile_and_first_step_s")
BREAKDOWN_FIELDS = ("step_cached_batch", "forward", "forward_backward", "optimizer_and_metrics",
                    "matmuls_at_peak", "kernel_forward_backward")


def test_flops_of_the_paper_vae_by_hand():
    b, p, h, z = 128, 784, 500, 500
    config = Config(model="vae", z_dim=z, batch_size=b)
    # encoder p-h-h-2z: the first layer needs no input gradient; decoder z-h-h-p: all do.
    macs = (2 * p * h + 3 * h * h + 3 * h * 2 * z) + (3 * z * h + 3 * h * h + 3 * h * p)
    total, matmul = bench_train.step_flops(config)
    assert total == matmul == 2 * b * macs


def test_npvae_adds_the_x_encoder_and_the_kernel():
    b, p, h, z, d = 128, 784, 500, 20, 2
    vae, _ = bench_train.step_flops(Config(model="vae", z_dim=z, batch_size=b))
    npvae, matmul = bench_train.step_flops(Config(model="npvae", z_dim=z, x_dim=d, batch_size=b))
    x_encoder = 2 * b * (2 * p * h + 3 * h * h + 3 * h * d)
    kernel_matmuls = 3 * 2 * b * b * z       # W @ E[z] forward, dW and dE[z] backward
    distances = 3 * 3 * b * b * d            # differences, squares, sums; forward + 2x backward
    assert matmul == vae + x_encoder + kernel_matmuls
    assert npvae == matmul + distances


def test_matmul_shapes_are_those_of_the_gradients():
    config = Config(model="npvae", z_dim=3, x_dim=2, hidden=(5,), batch_size=4, image_shape=(2, 2))
    shapes = {name: (m, k, n, ta, tb) for name, m, k, n, ta, tb in bench_train.matmuls(config)}
    assert shapes["encoder/0/fwd"] == (4, 4, 5, False, False)   # [B, P] @ [P, h]
    assert shapes["encoder/0/dW"] == (4, 4, 5, True, False)     # x^T @ dy: [P, B] @ [B, h]
    assert "encoder/0/dX" not in shapes and "x_encoder/0/dX" not in shapes
    assert shapes["decoder/0/dX"] == (4, 5, 3, False, True)     # dy @ W^T: [B, h] @ [h, Z]
    assert shapes["kernel/W@mu"] == (4, 4, 3, False, False)


def is_real_mnist(folder):
    path = os.path.join(folder or "", "train-images-idx3-ubyte.gz")
    return os.path.isfile(path) and os.path.getsize(path) > 1_000_000


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bench"))
    args = ["--quick", "--out", out, "--quiet"]
    real = os.environ.get("NPVAE_DATA_DIR")
    if is_real_mnist(real):
        args += ["--data_dir", real]
    else:  # enough generated images for a few batches of 128
        folder = write_mnist_like(str(tmp_path_factory.mktemp("digits")), n_train=1200)
        args += ["--data_dir", folder, "--validation_examples", "100"]
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_train.py"),
                             *args], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(out, "bench_train.json")) as f:
        report = json.load(f)
    with open(os.path.join(out, "bench_train.md")) as f:
        table = f.read()
    return report, table


def finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_quick_json_has_every_configuration_with_finite_values(quick_run):
    report, _ = quick_run
    rows = report["results"]
    assert {(r["model"], r["jit_compile"]) for r in rows} == {
        ("vae", False), ("npvae", False), ("vae", True), ("npvae", True)}
    for row in rows:
        for field in ROW_FIELDS:
            assert field in row, field
        for field, value in row.items():
            if field == "breakdown_ms":
                assert set(BREAKDOWN_FIELDS) <= set(value)
                assert all(finite(v) for v in value.values()), value
            elif isinstance(value, list):
                assert value and all(finite(v) for v in value), (field, value)
            elif field not in ("model", "jit_compile", "z_dim"):
                assert finite(value), (field, value)
        assert row["step_ms"] > 0 and row["examples_per_s"] > 0 and row["gflop_per_step"] > 0
        assert row["fraction_of_peak"] > 0 and row["peak_gflops_at_shapes"] > 0
        assert row["input_wait_epoch_start"] >= 0
        if row["model"] == "npvae":
            assert finite(row["npvae_over_vae"]) and row["npvae_over_vae"] > 0
            assert row["npvae_over_vae_flops"] > 1
            assert row["breakdown_ms"]["kernel_forward_backward"] > 0


def test_quick_json_has_machine_matmul_pipeline_and_targets(quick_run):
    report, _ = quick_run
    assert report["quick"] is True
    for field in ("cpu", "logical_cpus", "tensorflow", "keras"):
        assert report["machine"][field], field
    assert report["matmul"] and all(finite(m["gflops_tf"]) and finite(m["gflops_xla"])
                                    for m in report["matmul"])
    pipeline = report["input_pipeline"]
    assert all(finite(pipeline[k]) for k in ("epoch_start_s", "steps_per_epoch",
                                              "next_batch_ms_alone"))
    fit = report["fit_check"]
    assert finite(fit["ms_per_step"]) and finite(fit["first_batch_s"])
    checks = report["targets"]["checks"]
    assert len(checks) == 4 and all(isinstance(v, bool) for c in checks.values()
                                    for v in c.values())
    for profile in report["profiles"].values():
        assert "error" not in profile, profile
        assert profile["top_ops"] and finite(profile["op_ms_per_step_summed_over_threads"])
        assert finite(profile["input_wait_ms_per_step"])


def test_quick_markdown_table_has_a_row_per_configuration(quick_run):
    _, table = quick_run
    assert "| model | z | jit | step ms | examples/s |" in table
    rows = [line for line in table.splitlines() if line.startswith(("| vae |", "| npvae |"))]
    assert len(rows) == 8  # 4 configurations, in the main table and in the breakdown
    assert table.count("| vae z8 jit=") == 2 and table.count("| npvae z8 jit=") == 2  # profile
    # Op names (in backticks) may hold "nan", as `multiply_no_nan` does; the numbers may not.
    numbers = re.sub(r"`[^`]*`", "", table)
    assert not re.search(r"\b(nan|inf)\b", numbers, re.IGNORECASE), numbers


def test_quick_mode_never_writes_over_the_committed_results():
    assert bench_train.parse_args([]).out == bench_train.DEFAULT_OUT
    quick = bench_train.parse_args(["--quick"]).out
    assert quick == bench_train.QUICK_OUT and os.path.abspath(quick) != \
        os.path.abspath(bench_train.DEFAULT_OUT)
    assert bench_train.parse_args(["--quick", "--out", "x"]).out == "x"
