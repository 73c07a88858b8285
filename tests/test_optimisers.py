"""End-to-end: the optimisers study's --quick path writes its table, sidecar and figure, its checks
pass (GD, SGD and momentum keep S⊥ features fixed to round-off, Adam and sign descent do not; GD
approaches gradient flow at first order), and --plot-only re-plots from the table alone."""

import numpy as np
from _study import load_study_module, run_quick_end_to_end


def test_optimisers_quick_run_end_to_end(tmp_path, capsys):
    module = load_study_module("optimisers")
    table = run_quick_end_to_end(
        "optimisers",
        tmp_path,
        [
            "part",
            "problem",
            "eps",
            "head",
            "optimiser",
            "lr",
            "reached",
            "step",
            "train_ratio",
            "dist_id",
            "dist_ood",
            "s_perp_drift",
            "s_perp_drift_max",
            "ood_loss",
            "id_loss",
            "lp_ood",
            "flow_error",
        ],
    )
    matched = table["part"] == "matched"
    assert set(table["optimiser"][matched]) == set(module.OPTIMISERS)
    # Every run reached the matched ID fit, and the matched point is below the target.
    assert np.all(table["reached"][matched] == 1)
    assert np.all(table["train_ratio"][matched] <= module.Config.quick().target)
    # The S⊥ law: exact for linear combinations of gradients, broken by coordinate-wise rescaling.
    linear = matched & np.isin(table["optimiser"], module.LINEAR)
    assert np.all(table["s_perp_drift_max"][linear] <= 1e-10)
    assert np.all(table["s_perp_drift"][matched & ~linear] > 1e-6)
    # With Σ = I, features that moved in S alone change equally on ID and OOD inputs (in expectation).
    np.testing.assert_allclose(table["dist_ood_exact"][linear], table["dist_id_exact"][linear], rtol=1e-9)
    assert np.all(table["dist_ood_exact"][matched & ~linear] > table["dist_id_exact"][matched & ~linear])
    # GD → gradient flow is first order (fitted slope of log error against log η).
    orders = module.fitted_orders(table)["order"]
    assert orders.size and np.all((orders > 0.8) & (orders < 1.2))
    order = table["part"] == "order"
    assert np.all(table["flow_error"][order] > 0)
    out = capsys.readouterr().out
    assert "fitted order median" in out and "NOT REACHED" not in out
