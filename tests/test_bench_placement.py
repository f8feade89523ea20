"""The placement benchmark's smoke run: every row measured, the TF and scikit-learn searches
agree, and a smoke run refuses to write results."""

import pytest

from benchmarks.bench_placement import main


def test_quick_run_measures_both_searches_and_they_agree(capsys):
    rows = main(["--quick"])
    methods = {r["method"] for r in rows if "method" in r}
    assert methods == {"TF batch 1", "TF batch 1,024", "scikit-learn batch 1,024"}
    assert all(r["images_per_cpu_s"] > 0 for r in rows if "method" in r)
    agreement = [r for r in rows if "agreement_with_scikit_learn" in r]
    assert agreement and agreement[0]["agreement_with_scikit_learn"] >= 0.99
    assert "scikit-learn batch 1,024" in capsys.readouterr().out


def test_a_smoke_run_never_writes_results(tmp_path):
    with pytest.raises(SystemExit):
        main(["--quick", "--out", str(tmp_path / "r.json")])
    assert not (tmp_path / "r.json").exists()
