"""The results page (npvae_tf/reproduce/results_page.py): rendered again from the committed
docs/results.json, its tables and verdicts are the committed docs/results.md's, byte for byte."""

import json
import os

import pytest

from npvae_tf.evaluation.tables import comparison_markdown
from npvae_tf.reproduce.results_page import READING_X_ROWS, claims, settings_of
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def committed():
    with open(os.path.join(ROOT, "docs", "results.json")) as f:
        record = json.load(f)
    with open(os.path.join(ROOT, "docs", "results.md")) as f:
        page = f.read()
    results = [{**r["metrics"], "config": r["config"],
                **({"earlier": r["earlier"]} if "earlier" in r else {})} for r in record["runs"]]
    return record, results, page


def test_the_comparison_table_renders_as_committed(committed):
    record, results, page = committed
    table = comparison_markdown(results, record["reference"], settings_of(record))
    assert table.count("\n") > 20 and table in page


def test_the_claims_and_the_reading_notes_render_as_committed(committed):
    _, results, page = committed
    verdicts = claims(results)
    assert any("supported" in line for line in verdicts)
    assert "\n".join(verdicts) in page
    assert "\n".join(READING_X_ROWS) in page


def test_the_page_names_no_folder_of_the_machine_that_made_it(tmp_path, monkeypatch):
    from npvae_tf.reproduce.results_page import portable

    monkeypatch.chdir(tmp_path)
    command = f"python reproduce.py --runs_dir /work/runs --docs {tmp_path}/docs --epochs 50"
    assert portable(command) == \
        "python reproduce.py --runs_dir .../runs --docs docs --epochs 50"
    assert portable("/home/me/runs/npvae-neighbour-z500") == ".../npvae-neighbour-z500"
