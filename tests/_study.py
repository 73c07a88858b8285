"""Loading a study script from `experiments/` by file path (the scripts are not a package)."""

import importlib.util
import sys
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def load_study_module(name: str):
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_quick_end_to_end(name: str, tmp_path, columns) -> dict:
    """Run `<name>.py --quick` into `tmp_path` and return its table, after asserting: its checks
    passed (exit 0), `columns` are present, the sidecar and both figure files were written, and
    `--plot-only` redraws the figure from the table alone — with the config recorded beside it,
    not the command line's (the replot is asked for without `--quick`)."""
    import json

    from linprobe_theory.storage import read_csv

    study = load_study_module(name).STUDY
    assert study.main(["--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    table = read_csv(tmp_path / f"{name}.csv")
    missing = [c for c in columns if c not in table]
    assert not missing, f"missing columns {missing}"
    sidecar = json.loads((tmp_path / f"{name}.json").read_text())
    assert sidecar["study"] == name and sidecar["quick"] is True
    for suffix in (".png", ".pdf"):
        assert (tmp_path / f"{name}{suffix}").stat().st_size > 1000
    (tmp_path / f"{name}.png").unlink()
    replot = ["--out", str(tmp_path), "--figure-dir", str(tmp_path / "replot"), "--plot-only"]
    assert study.main(replot) == 0
    assert (tmp_path / f"{name}.png").exists() and (tmp_path / "replot" / f"{name}.png").exists()
    return table
