"""Checks that a run's SavedModel serves the numbers evaluation reports as served.

    python benchmarks/check_served.py RUN EXPORT_DIR [--n 1000]

On the first ``n`` test images of the run's data, through ``saved_model_cli run`` (the
session-style loader TensorFlow Serving uses) on the exported ``place``,
``reconstruct_through_x`` and ``generate_from_x``, against what evaluation computes in
process for its served column (``npvae_tf.evaluation.steps.served_step``: the placement of
:mod:`npvae_tf.model.placement`, the X path at the placed x, the sharp images there): the
largest differences, and the mean X path log-likelihood both ways. Exit status 1 if a
difference exceeds its tolerance.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

TOLERANCES = {"x": 1e-5, "log_prob": 1e-2, "images": 1e-4}


def saved_model_cli(export: str, signature: str, inputs: str, out: str) -> None:
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    subprocess.run([cli, "run", "--dir", export, "--tag_set", "serve", "--signature_def",
                    signature, "--inputs", inputs, "--outdir", out, "--overwrite"],
                   check=True, capture_output=True, text=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("export")
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args(argv)
    import numpy as np

    from npvae_tf.evaluation.steps import decoder_for, x_path_log_likelihood_at
    from npvae_tf.model.placement import place
    from npvae_tf.runs.load import load_run, training_data

    run = load_run(args.run)
    images = training_data(run).test.images[:args.n].reshape(args.n, -1).astype(np.float32)
    stored, scale = run.placement_set()
    placed = place(stored, run.reference.x, images, scale=scale)
    expected = {"x": placed,
                "log_prob": x_path_log_likelihood_at(run, placed, images, 500),
                "images": decoder_for(run, 500)(placed)}
    with tempfile.TemporaryDirectory() as tmp:
        np.save(os.path.join(tmp, "images.npy"), run.scaling.to_client(images))
        np.save(os.path.join(tmp, "x.npy"), placed)
        for signature, inputs in (("place", "images"), ("reconstruct_through_x", "images"),
                                  ("generate_from_x", "x")):
            saved_model_cli(args.export, signature, f"{inputs}={tmp}/{inputs}.npy",
                            os.path.join(tmp, signature))
        served = {"x": np.load(os.path.join(tmp, "place", "x.npy")),
                  "x_through": np.load(os.path.join(tmp, "reconstruct_through_x", "x.npy")),
                  "log_prob": np.load(os.path.join(tmp, "reconstruct_through_x",
                                                   "log_prob.npy")),
                  "images": run.scaling.to_model(
                      np.load(os.path.join(tmp, "generate_from_x", "images.npy")))}
    ok = True
    print(f"{args.n:,} test images of {args.run}, served by {args.export} "
          "(saved_model_cli run) against evaluation's served computation:")
    for key, tolerance in TOLERANCES.items():
        diff = float(np.max(np.abs(served[key] - expected[key])))
        ok &= diff <= tolerance
        print(f"  {key:<9} largest difference {diff:.3g} (tolerance {tolerance:g})")
    same = float(np.mean(np.all(served["x"] == served["x_through"], axis=1)))
    print(f"  reconstruct_through_x placed every image where place does: {same == 1.0}")
    print(f"  mean X path log p(y|z~): served {np.mean(served['log_prob']):.3f}, evaluation "
          f"{np.mean(expected['log_prob']):.3f} nats")
    return 0 if ok and same == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
