"""Inverse-transform benchmark: ``NPVAE.inverse_transform`` beside umap-learn's ``UMAP``.

    python benchmarks/bench_inverse.py                      # 10,000 MNIST training images
    python benchmarks/bench_inverse.py --quick              # smoke run (a minute), writes nothing
    python benchmarks/bench_inverse.py --out benchmarks/results/bench_inverse.json

Both are fitted (``fit_transform``) on the same first ``--train`` MNIST training images; the
same fixed ``--locations`` test images are placed in each one's 2-D map (``transform``) and
decoded back from their locations (``inverse_transform``). Measured side by side in one run:
decoded images per second of process CPU time (``time.process_time``, all threads; after a
warm-up call on 5 locations, so neither TensorFlow's tracing nor numba's compilation counts), the
Fréchet distance between the project's classifier features (the cached MNIST classifier of
``evaluate.py``) of the decoded images and of the whole test set, the share of decoded images
the classifier gives their test image's label, and the fit + transform time of each. The real
test images at the same locations give the floor of both quality numbers. Nothing is asserted
about timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_DATA = "/work/shared/data/mnist"


def timed(fn):
    """``(result, wall seconds, process CPU seconds)`` of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def quality(classifier, decoded, labels, test_features):
    """Fréchet distance to the test set's features and the classifier's accuracy on
    ``decoded`` ``[N, 784]`` images with the true ``labels`` ``[N]``."""
    import numpy as np

    from npvae_tf.evaluation.metrics import frechet_distance

    features, probs = classifier.predict(np.clip(decoded, 0.0, 1.0).astype(np.float32))
    return {"frechet": frechet_distance(features, test_features),
            "accuracy": float(np.mean(probs.argmax(axis=1) == labels))}


RATIO_KEYS = ("images_per_cpu_s", "frechet", "accuracy", "fit_cpu_s", "transform_cpu_s")


def table(rows, floor, ratios, locations: int) -> str:
    """The Markdown table of the results (rows: NPVAE's, then UMAP's)."""
    lines = [f"| method | decoded images per CPU-s | Fréchet distance | class accuracy "
             f"| fit CPU-s | transform of {locations} CPU-s |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['images_per_cpu_s']:,.1f} | {r['frechet']:.1f} | "
                     f"{r['accuracy']:.3f} | {r['fit_cpu_s']:,.1f} | {r['transform_cpu_s']:,.2f} |")
    lines.append(f"| the real test images (floor) | | {floor['frechet']:.1f} | "
                 f"{floor['accuracy']:.3f} | | |")
    lines.append(f"| ratio NPVAE / UMAP | {ratios['images_per_cpu_s']:,.0f}x | "
                 f"{ratios['frechet']:.2f} | {ratios['accuracy']:.2f} | "
                 f"{ratios['fit_cpu_s']:.2f} | {ratios['transform_cpu_s']:.4f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("NPVAE_DATA_DIR", DEFAULT_DATA),
                        help="MNIST (IDX files or mnist.npz)")
    parser.add_argument("--train", type=int, default=10000, help="training images")
    parser.add_argument("--locations", type=int, default=300,
                        help="test images decoded from their locations")
    parser.add_argument("--scheme", default="umap-landmark", help="NPVAE's scheme")
    parser.add_argument("--z_dim", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3,
                        help="NPVAE.inverse_transform calls timed (median)")
    parser.add_argument("--quick", action="store_true",
                        help="1,000 images, 50 locations, 2 epochs, small MLPs; writes nothing")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    hidden = (500, 500)
    if args.quick:
        args.train, args.locations, args.epochs, args.repeats, hidden = 1000, 50, 2, 1, (64,)

    import numpy as np
    import umap

    from npvae_tf.data.datasets import load_data
    from npvae_tf.evaluation.classifier import load_or_train_classifier
    from npvae_tf.evaluation.settings import Settings
    from npvae_tf.serving.estimator import NPVAE

    load_before = os.getloadavg()[0]
    data = load_data(args.data)
    if args.train > len(data.train):
        parser.error(f"--train {args.train}: the data has {len(data.train)} training images")
    train = data.train.images[:args.train]
    chosen = np.random.default_rng(0).choice(len(data.test), args.locations, replace=False)
    test_images, test_labels = data.test.images[chosen], data.test.labels[chosen]
    settings = Settings()
    classifier = load_or_train_classifier(
        data.train.images, data.train.labels, data.test.images, data.test.labels,
        data.image_shape, settings.classifier_cache, settings.classifier_epochs, settings.seed)
    test_features, _ = classifier.predict(data.test.images)

    methods = {
        f"NPVAE ({args.scheme}, Z {args.z_dim}, {args.epochs} epochs)":
            NPVAE(scheme=args.scheme, z_dim=args.z_dim, epochs=args.epochs, hidden=hidden,
                  random_state=0),
        "umap-learn UMAP": umap.UMAP(random_state=0),
    }
    rows = []
    for name, estimator in methods.items():
        print(f"{name}: fit_transform {len(train):,} images ...", flush=True)
        _, fit_wall, fit_cpu = timed(lambda: estimator.fit_transform(train))
        locations, transform_wall, transform_cpu = timed(lambda: estimator.transform(test_images))
        repeats = args.repeats if isinstance(estimator, NPVAE) else 1  # UMAP's: minutes
        # A warm-up call on 5 locations first: TensorFlow traces, numba compiles.
        _, warmup_wall, _ = timed(lambda: estimator.inverse_transform(locations[:5]))
        calls = [timed(lambda: estimator.inverse_transform(locations)) for _ in range(repeats)]
        decoded = np.asarray(calls[0][0]).reshape(len(locations), -1)
        cpu = statistics.median(c[2] for c in calls)
        wall = statistics.median(c[1] for c in calls)
        rows.append({"method": name, "fit_wall_s": fit_wall, "fit_cpu_s": fit_cpu,
                     "transform_wall_s": transform_wall, "transform_cpu_s": transform_cpu,
                     "inverse_wall_s": wall, "inverse_cpu_s": cpu, "inverse_calls": repeats,
                     "warmup_wall_s": warmup_wall,
                     "images_per_cpu_s": len(locations) / cpu,
                     **quality(classifier, decoded, test_labels, test_features)})
        print(f"  fit {fit_wall:.1f} s, inverse_transform {wall:.2f} s wall, {cpu:.2f} CPU-s",
              flush=True)
    floor = quality(classifier, test_images, test_labels, test_features)
    npvae, umap_row = rows
    ratios = {key: npvae[key] / umap_row[key] for key in RATIO_KEYS}
    print(f"\n{len(train):,} MNIST training images, {len(chosen)} test locations, "
          f"{os.cpu_count()} CPUs (load {load_before:.2f} at start, "
          f"{os.getloadavg()[0]:.2f} at the end)\n")
    print(table(rows, floor, ratios, len(chosen)))
    if args.out and not args.quick:
        result = {"train": len(train), "locations": len(chosen), "cpus": os.cpu_count(),
                  "load_average_start": load_before, "settings": vars(args),
                  "classifier_test_accuracy": classifier.test_accuracy, "rows": rows,
                  "real_test_images": floor, "ratios": ratios}
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
