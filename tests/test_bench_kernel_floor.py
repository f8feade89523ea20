"""The floor benchmark's products compute z~ (checked against NumPy written from the formula)."""

import numpy as np

from benchmarks.bench_kernel_floor import floors


def test_every_floor_computes_the_predictive_mean_over_its_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 2))
    z = rng.normal(size=(3000, 8)).astype(np.float32)
    queries = x[rng.integers(0, 3000, 96)] + 0.05 * rng.normal(size=(96, 2))
    l, radius = 0.1, 0.6
    found = floors(x, z, queries, l, radius, reps=1, block_sizes=(16, 32))
    # The pairs: every reference point within the radius, as a brute-force count says.
    d2 = ((queries[:, None] - x[None]) ** 2).sum(-1)
    assert found.pop("pairs per query") == (d2 <= radius ** 2).sum() / len(queries)
    assert sorted(found) == ["blocked 16", "blocked 32", "sparse, query-major",
                             "sparse, reference-major"]
    for name, (seconds, diff) in found.items():
        assert seconds > 0 and diff < 1e-5, (name, seconds, diff)
