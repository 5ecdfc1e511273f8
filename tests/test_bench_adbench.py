"""bench/adbench.py: ADBench's unsupervised protocol on folders of .npz tables (X, y)."""

import json
import signal
import time

import numpy as np
import pytest

from aekit.errors import TrainingStopped
from bench import adbench


@pytest.fixture
def tables(tmp_path):
    """Two tables of 60 rows, six of them far from the rest and labelled anomalies."""
    folder = tmp_path / "tables"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, columns in (("a_small", 3), ("b_wider", 5)):
        x = rng.normal(size=(60, columns))
        x[:6] += 6
        np.savez(folder / f"{name}.npz", X=x, y=(np.arange(60) < 6).astype(np.int64))
    return folder


def run(tmp_path, folder, *extra):
    argv = ["--data-dir", str(folder), "--json", str(tmp_path / "adbench.json")]
    argv += ["--results", str(tmp_path / "RESULTS.md"), "--figure", str(tmp_path / "ranks.png"), *extra]
    return adbench.main(argv)


def test_each_set_method_and_seed_is_saved_in_the_issues_format(tmp_path, tables):
    assert run(tmp_path, tables, "--methods", "IsolationForest,aekit PCA", "--seeds", "0,1") == 0
    saved = json.loads((tmp_path / "adbench.json").read_text())
    assert {(r["dataset"], r["method"], r["seed"]) for r in saved} == {
        (s, m, seed) for s in ("a_small", "b_wider") for m in ("IsolationForest", "aekit PCA") for seed in (0, 1)
    }
    for r in saved:
        assert set(r) == {"dataset", "method", "seed", "auroc", "auprc", "seconds"}
        assert 0 <= r["auroc"] <= 1 and 0 < r["auprc"] <= 1 and r["seconds"] > 0
    assert all(r["auroc"] > 0.9 for r in saved if r["method"] == "IsolationForest")  # the six far rows stand out
    text = (tmp_path / "RESULTS.md").read_text()
    assert (
        text.startswith(adbench.SECTION)
        and "### tables" in text
        and "| a_small |" in text
        and (tmp_path / "ranks.png").exists()
    )


def test_a_rerun_measures_only_what_is_not_saved(tmp_path, tables, monkeypatch, capsys):
    run(tmp_path, tables, "--methods", "aekit AE", "--sets", "a_small")  # aekit's detector at its defaults
    first = json.loads((tmp_path / "adbench.json").read_text())
    assert [(r["method"], r["seed"]) for r in first] == [("aekit AE", 0)] and first[0]["auroc"] is not None
    calls = []
    monkeypatch.setitem(adbench.METHODS, "aekit AE", adbench.Method(lambda x, seed, args: calls.append(1) or x[:, 0]))
    capsys.readouterr()
    run(tmp_path, tables, "--methods", "aekit AE")
    assert len(calls) == 1  # b_wider only
    again = json.loads((tmp_path / "adbench.json").read_text())
    assert [r for r in again if r["dataset"] == "a_small"] == first
    assert "a_small" not in capsys.readouterr().out.split("\n\n")[0]  # the log before the section


def test_a_fit_past_the_cap_is_saved_as_capped_and_measured_again_only_with_a_longer_cap(tmp_path, tables, monkeypatch):
    def slow(x, seed, args):
        while True:
            time.sleep(0.01)

    monkeypatch.setitem(adbench.METHODS, "IsolationForest", adbench.Method(slow))
    run(tmp_path, tables, "--methods", "IsolationForest", "--sets", "a_small", "--max-seconds", "0.1")
    (saved,) = json.loads((tmp_path / "adbench.json").read_text())
    assert saved["capped"] is True and saved["auroc"] is None and saved["seconds"] == 0.1
    args = adbench.arguments(["--data-dir", ".", "--max-seconds", "0.1"])
    assert adbench.stands(saved, args) and not adbench.stands(saved, adbench.arguments(["--data-dir", "."]))
    assert "capped" in (tmp_path / "RESULTS.md").read_text()


def test_the_mean_rank_averages_each_sets_ranks_by_auroc_with_ties_sharing():
    results = [
        {"dataset": s, "method": m, "seed": 0, "auroc": auroc, "auprc": 0.5, "seconds": 1.0}
        for s, aurocs in (("one", (0.9, 0.8, 0.7)), ("two", (0.6, 0.6, 0.9)))
        for m, auroc in zip(("A", "B", "C"), aurocs)
    ]
    table = adbench.by_set(results)
    assert adbench.mean_ranks(table, ["A", "B", "C"], ["one", "two"]) == {"A": 1.75, "B": 2.25, "C": 2.0}
    rows = adbench.summary(table, ["A", "B", "C"], ["one", "two"])
    assert [row["method"] for row in rows] == ["A", "C", "B"] and rows[0]["mean AUROC"] == "0.750"


def test_a_method_whose_package_is_missing_is_skipped_in_one_line(tmp_path, tables, monkeypatch, capsys):
    monkeypatch.setitem(adbench.METHODS, "ECOD", adbench.Method(lambda x, seed, args: x[:, 0], "no_such_package"))
    monkeypatch.setitem(adbench.METHODS, "HBOS", adbench.Method(lambda x, seed, args: x[:, 0], "no_such_package"))
    monkeypatch.setitem(adbench.INSTALL, "no_such_package", "pip install no_such_package")
    assert run(tmp_path, tables, "--methods", "ECOD,HBOS,IsolationForest") == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["adbench: no_such_package is not installed, its methods are skipped: pip install no_such_package"]
    assert {r["method"] for r in json.loads((tmp_path / "adbench.json").read_text())} == {"IsolationForest"}


@pytest.mark.parametrize("problem", ["missing", "empty", "no labels", "labels not 0/1"])
def test_a_bad_folder_or_table_is_refused_in_one_line(tmp_path, tables, capsys, problem):
    (tmp_path / "empty").mkdir()
    folder = {"missing": tmp_path / "nowhere", "empty": tmp_path / "empty"}.get(problem, tables)
    if problem == "no labels":
        np.savez(tables / "c_bad.npz", X=np.zeros((60, 3)))
    if problem == "labels not 0/1":
        np.savez(tables / "c_bad.npz", X=np.zeros((60, 3)), y=np.full(60, 2))
    assert run(tmp_path, folder, "--methods", "IsolationForest") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("adbench: error: ")
    assert not (tmp_path / "RESULTS.md").exists()


def test_a_signal_inside_aekits_training_stops_the_run_and_saves_no_result(tmp_path, tables, monkeypatch):
    def stopped(x, seed, args):
        raise TrainingStopped("stopped by SIGTERM after step 1 of epoch 3", signal.SIGTERM)

    monkeypatch.setitem(adbench.METHODS, "aekit AE", adbench.Method(stopped))
    assert run(tmp_path, tables, "--methods", "IsolationForest,aekit AE") == 128 + signal.SIGTERM
    saved = json.loads((tmp_path / "adbench.json").read_text())
    assert [(r["dataset"], r["method"]) for r in saved] == [("a_small", "IsolationForest")]


def test_a_variant_is_compared_with_its_base_seed_by_seed_and_not_ranked(tmp_path, tables, monkeypatch):
    monkeypatch.setitem(adbench.METHODS, "aekit AE", adbench.Method(lambda x, seed, args: np.abs(x).sum(1)))
    upside_down = adbench.Method(lambda x, seed, args: -np.abs(x).sum(1), variant_of="aekit AE")
    monkeypatch.setitem(adbench.METHODS, "aekit AE x3 codes", upside_down)
    assert run(tmp_path, tables, "--methods", "IsolationForest,aekit AE,aekit AE x3 codes", "--seeds", "0,1") == 0
    text = (tmp_path / "RESULTS.md").read_text()
    ranked = text.split("Every method, over the 2 sets that all of them finished:")[1].split("Options of")[0]
    assert "| aekit AE |" in ranked and "x3 codes" not in ranked
    assert "| aekit AE x3 codes | aekit AE | 4 | 0.000 | 1.000 | 0 | 4 |" in text  # 2 sets x 2 seeds, all lower
