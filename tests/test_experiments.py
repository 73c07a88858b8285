"""End-to-end: each study's --quick path writes its table, sidecar and figure, and its checks
pass (no bound violations); --plot-only re-plots from the table alone."""

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from _study import load_study_module

from linprobe_theory.experiment import build_parser
from linprobe_theory.progress import LazyProgress
from linprobe_theory.storage import read_csv

FIGURES = Path(__file__).resolve().parent.parent / "figures"

COLUMNS = {
    "sweep_alignment": [
        "eps",
        "seed",
        "head",
        "phi",
        "coverage",
        "ft_ood_final",
        "ft_ood_min",
        "ft_bound",
        "lp_ood",
        "lpft_ood_final",
        "ft_id_final",
        "lp_id",
        "lpft_id_final",
        "ft_orthogonal_drift",
        "tightness",
        "bound_violation",
    ],
    "sweep_epsilon": ["eps", "seed", "lp_ood", "ft_ood_min", "lp_over_ft", "lp_bound"],
    "early_stopping": ["run", "t", "ft_ood", "lpft_ood", "lp_ood", "ft_bound"],
    "tradeoff": ["eps", "shift", "ood_ft_over_lp", "id_lp_minus_ft", "ood_lpft_over_best"],
    "feature_distortion": ["run", "t", "ft_id", "ft_ood", "ft_ood_S", "ft_ood_perp", "lpft_id", "lpft_ood"],
}


def load_study(name):
    return load_study_module(name).STUDY


@pytest.mark.parametrize("name", list(COLUMNS))
def test_quick_run_end_to_end(name, tmp_path, capsys):
    study = load_study(name)
    assert study.main(["--quick", "--out", str(tmp_path), "--no-progress"]) == 0  # its checks passed
    table = read_csv(tmp_path / f"{name}.csv")
    missing = [c for c in COLUMNS[name] if c not in table]
    assert not missing, f"missing columns {missing}"
    assert len(table[COLUMNS[name][0]]) > 0
    for column, values in table.items():
        if values.dtype.kind == "f":
            assert np.all(np.isfinite(values) | (column in ("phi_target", "tightness"))), column
    sidecar = json.loads((tmp_path / f"{name}.json").read_text())
    assert sidecar["quick"] is True and "jax" in sidecar["versions"] and sidecar["git_commit"]
    for suffix in (".png", ".pdf"):
        assert (tmp_path / f"{name}{suffix}").stat().st_size > 1000
    if name in ("sweep_alignment", "early_stopping"):
        out = capsys.readouterr().out
        assert "bound violations (FT OOD < bound at some saved time): 0" in out or "< bound: 0" in out
    if name == "sweep_alignment":
        assert int(np.sum(table["bound_violation"])) == 0
        assert np.all(table["ft_orthogonal_drift"] <= 1e-10)

    # --plot-only redraws from the table alone.
    (tmp_path / f"{name}.png").unlink()
    assert study.main(["--quick", "--out", str(tmp_path), "--plot-only"]) == 0
    assert (tmp_path / f"{name}.png").exists()


def test_plot_only_without_a_table_fails_clearly(tmp_path):
    with pytest.raises(SystemExit, match="no table"):
        load_study("sweep_epsilon").main(["--quick", "--out", str(tmp_path), "--plot-only"])


def test_cli_overrides_reach_the_config_and_outputs_follow_the_cwd(tmp_path, monkeypatch):
    """Overrides reach the config; without `--out` everything goes under the current directory
    (not next to the package), no figure is written outside the output folder unless asked, and
    a rerun with the same config writes byte-identical figures."""
    committed = {p.name: p.read_bytes() for p in FIGURES.glob("*")}
    study = load_study("sweep_epsilon")
    args = ["--quick", "--no-progress", "--num-eps", "3", "--seeds", "1"]
    monkeypatch.chdir(tmp_path)
    assert study.main(args) == 0
    first = tmp_path / "results" / "sweep_epsilon-quick"
    sidecar = json.loads((first / "sweep_epsilon.json").read_text())
    assert sidecar["config"]["num_eps"] == 3 and sidecar["config"]["seeds"] == 1
    assert len(read_csv(first / "sweep_epsilon.csv")["eps"]) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
    assert {p.name: p.read_bytes() for p in FIGURES.glob("*")} == committed

    second = tmp_path / "again"
    assert study.main(args + ["--out", str(second), "--figure-dir", str(tmp_path / "figs")]) == 0
    for suffix in (".csv", ".png", ".pdf"):
        name = "sweep_epsilon" + suffix
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    for suffix in (".png", ".pdf"):
        name = "sweep_epsilon" + suffix
        assert (tmp_path / "figs" / name).read_bytes() == (second / name).read_bytes(), name


ALL_STUDIES = sorted(
    p.stem for p in (FIGURES.parent / "experiments").glob("*.py") if not p.stem.startswith("_")
)


@pytest.mark.parametrize("name", ALL_STUDIES)
def test_help_states_each_default_once(name):
    study = load_study(name)
    text = build_parser(study.config_cls, study.description).format_help()
    assert "(default: None)" not in text
    for f in dataclasses.fields(study.config_cls):
        flag = "--" + f.name.replace("_", "-")
        entry = text[text.index("\n  " + flag + " ") + 3 :].split("\n  --")[0]
        assert entry.count("default:") == 1, entry


def test_progress_bar_appears_only_once_its_total_is_known():
    stream = io.StringIO()
    bar = LazyProgress("sweep", file=stream)
    assert stream.getvalue() == ""
    bar.reset(total=5)
    bar.update(2)
    bar.close()
    text = stream.getvalue()
    # A total-less tqdm line reads "sweep: 0run [00:00, ?run/s]"; with a total, "0/5 [...]".
    first = text.strip("\r").split("\r")[0]
    assert "0/5" in first and "run [" not in text, text
