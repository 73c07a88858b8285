"""End-to-end: the --quick paths of the studies of the extensions (nonlinear activations,
layerwise rates, regularisation) write their tables, sidecars and figures, their law checks
pass, and the laws hold in the tables themselves."""

import numpy as np
from _study import load_study_module, run_quick_end_to_end


def test_nonlinear_activations_quick(tmp_path, capsys):
    table = run_quick_end_to_end(
        "nonlinear_activations",
        tmp_path,
        ["case", "eps", "phi", "ft_ood_min", "lp_ood", "lpft_ood_final", "ft_id_final", "ft_perp_residual"],
    )
    # S⊥ pre-activations are fixed for every σ, measured in full coordinates.
    assert np.max(table["ft_perp_residual"]) <= 1e-10 and np.max(table["lpft_perp_residual"]) <= 1e-10
    assert np.all(table["ft_status"] <= 1) and np.all(table["lpft_status"] <= 1)
    # Well-specified cases: LP's OOD risk is O(ε²) (exact at ε → 0), far below FT's at the smallest ε.
    small = (table["eps"] == np.min(table["eps"])) & (table["case"] != "identity:relu")
    assert np.all(table["lp_ood"][small] < 0.1 * table["ft_ood_min"][small])
    assert "relu" in set(table["case"]) and "tanh" in set(table["case"])
    assert "S⊥ drift" in capsys.readouterr().out


def test_layerwise_rates_quick(tmp_path, capsys):
    table = run_quick_end_to_end(
        "layerwise_rates",
        tmp_path,
        ["ratio", "head", "ft_ood_final", "ft_ood_min", "ft_id_at_ood_min", "lpft_ood_final", "lp_ood"],
    )
    module = load_study_module("layerwise_rates")
    assert np.max(module.conserved_drift(table)) <= 1e-5
    # η_B ≪ η_v: the head converges first, and FT ends far closer to LP-FT's OOD loss than at
    # equal rates (where FT distorts the features from the start).
    slow, equal = table["ratio"] == np.min(table["ratio"]), table["ratio"] == 1.0
    gap = np.abs(np.log(table["ft_ood_final"] / table["lpft_ood_final"]))
    assert np.median(gap[slow]) < np.median(gap[equal])
    assert "conserved" in capsys.readouterr().out


def test_regularisation_quick(tmp_path, capsys):
    table = run_quick_end_to_end(
        "regularisation",
        tmp_path,
        [
            "kind",
            "lam",
            "head",
            "coordinates",
            "ft_ood_final",
            "lpft_ood_final",
            "lp_ood",
            "perp_scale_final",
        ],
    )
    full = table["coordinates"] == "full"
    assert full.any()
    rel = np.maximum(table["ft_perp_residual"], table["lpft_perp_residual"])[full] / table["perp_norm"][full]
    assert np.max(rel) <= 1e-8
    # In reduced coordinates the law is structural (round-off only), steady-state stops included.
    reduced = ~full
    assert np.max(np.maximum(table["ft_perp_residual"], table["lpft_perp_residual"])[reduced]) <= 1e-12
    decay = table["kind"] == "weight_decay_B"
    assert np.allclose(table["perp_scale_final"][decay], np.exp(-2 * table["lam"][decay] * 50.0), rtol=1e-12)
    assert np.all(table["perp_scale_final"][table["kind"] == "l2sp"] == 1.0)
    assert "S⊥ law in full coordinates" in capsys.readouterr().out
