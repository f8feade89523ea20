"""Data-reading benchmark: ``read_source`` on a folder of PNGs (cold and cached) and a CSV.

    python benchmarks/bench_data_read.py                # 70,000 28x28 PNGs, 70,000-row CSV
    python benchmarks/bench_data_read.py --out benchmarks/results/bench_data_read.json
    python benchmarks/bench_data_read.py --quick        # 2,000 files, a smoke run (seconds)
    python benchmarks/bench_data_read.py --work DIR     # keep the generated files in DIR

Generates MNIST-shaped data (grayscale 28x28 digits-like images, 10 classes): one PNG per
image in ten class subfolders, a CSV of 784 pixel columns plus ``label`` under a header row,
and the same arrays as ``.npy`` files. Then times, interleaved in rounds (best of the rounds;
shared-machine load affects all alike): ``numpy.load`` of the uint8 ``[N, 28, 28]`` ``.npy``
(the floor every ratio is to), ``read_source`` on the PNG folder with an empty cache (cold:
list, stat, decode, write the cache), the same again (warm: the cache hit), ``read_source``
on the CSV with ``label_column="label"``, and ``numpy.load`` of the CSV's float64 ``[N, 784]``
``.npy``. The files are freshly written, so they are in the OS page cache: cold means no
decode cache, not a cold disk. Every read is checked against the generated arrays. The
target is a cold PNG read of 70,000 files in <= 30 s on a 2-core machine; nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

TARGET_COLD_SECONDS = 30.0


def digits(n: int, seed: int = 0):
    """``(images [N, 28, 28] uint8, labels [N] int64)``: noisy copies of ten prototypes."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((10, 28, 28)) > 0.7
    labels = rng.integers(0, 10, n)
    noise = rng.random((n, 28, 28)) < 0.05
    return (np.where(noise, ~prototypes[labels], prototypes[labels]) * 255).astype(np.uint8), \
        labels.astype(np.int64)


def generate(work: str, n: int) -> dict:
    """Writes the PNG folder, the CSV and the ``.npy`` files; returns their paths and arrays."""
    from PIL import Image

    images, labels = digits(n)
    # Files in class order, as read_source returns them (sorted subfolders, sorted names).
    order = np.argsort(labels, kind="stable")
    images, labels = images[order], labels[order]
    folder = os.path.join(work, "png")
    for c in range(10):
        os.makedirs(os.path.join(folder, f"class_{c}"), exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(os.path.join(folder, f"class_{label}", f"{i:06d}.png"))
    table = np.column_stack([images.reshape(n, -1), labels]).astype(np.int64)
    csv_path = os.path.join(work, "data.csv")
    header = ",".join([f"pixel{i}" for i in range(784)] + ["label"])
    np.savetxt(csv_path, table, fmt="%d", delimiter=",", header=header, comments="")
    paths = {"png": folder, "csv": csv_path, "npy_uint8": os.path.join(work, "images.npy"),
             "npy_float64": os.path.join(work, "table.npy")}
    np.save(paths["npy_uint8"], images)
    np.save(paths["npy_float64"], images.reshape(n, -1).astype(np.float64))
    return {"paths": paths, "images": images, "labels": labels}


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - t, time.process_time() - c


def measure(data: dict, cache: str, rounds: int) -> dict:
    """Best (wall, CPU) seconds of each read over ``rounds`` interleaved rounds."""
    from npvae_tf.data.sources import read_source

    paths, images, labels = data["paths"], data["images"], data["labels"]
    flat = images.reshape(len(images), -1).astype(np.float64)

    def check(raw, x, y):
        assert raw.train_x.dtype == x.dtype and np.array_equal(raw.train_x, x), "wrong pixels"
        assert np.array_equal(raw.train_y, y), "wrong labels"

    def cold():
        shutil.rmtree(cache, ignore_errors=True)
        return read_source(paths["png"])

    reads = {
        "numpy.load .npy uint8 [N, 28, 28]": lambda: np.load(paths["npy_uint8"]),
        "read_source PNG folder, cold (no cache)": cold,
        "read_source PNG folder, warm (cache hit)": lambda: read_source(paths["png"]),
        "read_source CSV (label_column='label')":
            lambda: read_source(paths["csv"], label_column="label"),
        "numpy.load .npy float64 [N, 784] (the CSV's data)":
            lambda: np.load(paths["npy_float64"]),
    }
    checks = {"read_source PNG folder, cold (no cache)": lambda r: check(r, images, labels),
              "read_source PNG folder, warm (cache hit)": lambda r: check(r, images, labels),
              "read_source CSV (label_column='label')": lambda r: check(r, flat, labels)}
    times = {name: [] for name in reads}
    for _ in range(rounds):
        for name, read in reads.items():
            value, wall, cpu = timed(read)
            checks.get(name, lambda r: None)(value)
            times[name].append((wall, cpu))
            del value
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2,000 files, one round (a smoke test; writes no results)")
    parser.add_argument("--n", type=int, default=None, help="images and CSV rows (70,000)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3)")
    parser.add_argument("--work", default=None,
                        help="folder for the generated files (kept); default a temporary one")
    parser.add_argument("--out", default=None, help="save the results as JSON here")
    args = parser.parse_args(argv)
    n = args.n or (2000 if args.quick else 70000)
    rounds = args.rounds or (1 if args.quick else 3)
    load_before = os.getloadavg()
    work = args.work or tempfile.mkdtemp(prefix="bench_data_read-")
    os.makedirs(work, exist_ok=True)
    cache = os.path.join(work, "cache")
    os.environ["NPVAE_CACHE_DIR"] = cache  # never the user's ~/.cache
    try:
        t = time.perf_counter()
        data = generate(work, n)
        generate_seconds = time.perf_counter() - t
        times = measure(data, cache, rounds)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    from PIL import __version__ as pillow_version

    print(f"{n:,} 28x28 grayscale PNGs in 10 class subfolders; a {n:,}-row CSV of 784 columns "
          f"+ label (generated in {generate_seconds:.0f} s); best of {rounds} interleaved rounds")
    print(f"machine: {os.cpu_count()} CPUs, load average {load_before[0]:.2f} (1 min) at start; "
          f"Python {platform.python_version()}, NumPy {np.__version__}, Pillow {pillow_version}\n")
    base = min(w for w, _ in times["numpy.load .npy uint8 [N, 28, 28]"])
    rows = []
    print(f"| {'read':<52} | {'wall s':>7} | {'x numpy.load':>12} | {'CPU s':>6} |")
    print(f"|{'-' * 54}|{'-' * 9}|{'-' * 14}|{'-' * 8}|")
    for name, pairs in times.items():
        wall, cpu = min(w for w, _ in pairs), min(c for _, c in pairs)
        rows.append({"read": name, "best_wall_s": wall, "best_cpu_s": cpu,
                     "ratio_to_numpy_load": wall / base,
                     "wall_s_each_round": [w for w, _ in pairs]})
        print(f"| {name:<52} | {wall:7.3f} | {wall / base:12.1f} | {cpu:6.2f} |")
    cold = min(w for w, _ in times["read_source PNG folder, cold (no cache)"])
    print(f"\ntarget: cold PNG read of 70,000 files <= {TARGET_COLD_SECONDS:.0f} s; measured "
          f"{cold:.1f} s for {n:,} ({n / cold:,.0f} images/s)")
    print("(CPU s: process CPU time, all threads; ratios: wall time over numpy.load of the "
          "uint8 .npy)")
    load_after = os.getloadavg()
    print(f"load average {load_after[0]:.2f} (1 min) at the end")
    if args.out:
        result = {"benchmark": "bench_data_read", "date": datetime.datetime.now().isoformat(
                      timespec="seconds"), "quick": args.quick, "examples": n, "rounds": rounds,
                  "machine": {"logical_cpus": os.cpu_count(), "python": platform.python_version(),
                              "numpy": np.__version__, "pillow": pillow_version},
                  "load": {"loadavg_start": load_before, "loadavg_end": load_after},
                  "generate_seconds": generate_seconds, "target_cold_seconds": TARGET_COLD_SECONDS,
                  "cold_images_per_s": n / cold, "rows": rows}
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
