"""End-to-end: the finetuning_methods study's --quick path writes its table, sidecar and figure,
its law checks pass (the WiSE-FT sweep is its quartic, τ → ∞ is LP-FT, the frozen head does not
move, the logistic flow keeps S⊥ fixed), and --plot-only re-plots from the table alone."""

import numpy as np
from _study import run_quick_end_to_end


def _rows(table, part, method=None):
    s = table["part"] == part
    if method is not None:
        s &= table["method"] == method
    return {name: values[s] for name, values in table.items()}


def test_finetuning_methods_quick_run_end_to_end(tmp_path, capsys):
    columns = ["part", "run", "eps", "head", "phi", "method", "alpha", "tau", "ood", "id"]
    columns += ["ood_quartic", "ood_scale", "lp_residual", "lp_gap", "head_drift", "ood_01", "orth_drift"]
    table = run_quick_end_to_end("finetuning_methods", tmp_path, columns)
    assert set(table["part"]) == {"a", "b", "c", "d"}

    # (a) The sweep is the quartic to round-off; its ends are LP and FT of part c, exactly.
    a = _rows(table, "a")
    assert np.all(np.abs(a["ood"] - a["ood_quartic"]) <= 1e-10 * a["ood_scale"])
    # The quartic's minimiser is at least as good as every swept α.
    starts = np.flatnonzero(a["alpha"] == 0)
    assert np.all(a["ood_best"][starts] <= np.minimum.reduceat(a["ood"], starts) * (1 + 1e-12))
    lp, ft, lpft = (_rows(table, "c", m) for m in ("LP", "FT", "LP-FT"))
    np.testing.assert_allclose(a["ood"][a["alpha"] == 0], lp["ood"], rtol=1e-12)
    np.testing.assert_allclose(a["ood"][a["alpha"] == 1], ft["ood"], rtol=1e-12)

    # (b) τ = 0 is FT, τ = ∞ is LP-FT (the same solves), τ_max reproduces LP-FT to 1e-6.
    b = _rows(table, "b")
    np.testing.assert_allclose(b["ood"][b["tau"] == 0], ft["ood"], rtol=1e-12)
    np.testing.assert_allclose(b["ood"][np.isinf(b["tau"])], lpft["ood"], rtol=1e-12)
    tau_max = b["tau"][np.isfinite(b["tau"])].max()
    np.testing.assert_allclose(b["ood"][b["tau"] == tau_max], lpft["ood"], rtol=1e-6)
    assert np.all(b["lp_residual"][np.isinf(b["tau"])] == 0)

    # (c) The frozen head stays v_lp exactly; the ID loss goes to zero.
    frozen = _rows(table, "c", "FT-frozen-head")
    assert np.all(frozen["head_drift"] == 0)
    assert np.all(frozen["id"] <= 1e-10 * lp["id"])

    # (d) S⊥ is fixed under the logistic loss (full coordinates).
    d = _rows(table, "d")
    drift = d["orth_drift"][d["method"] != "LP"]
    assert drift.size and np.all(drift <= 1e-10)
    assert np.all((d["ood_01"] >= 0) & (d["ood_01"] <= 1))

    out = capsys.readouterr().out
    assert "(a) WiSE-FT" in out and "solver failures: 0" in out
