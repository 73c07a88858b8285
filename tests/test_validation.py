"""Bad input raises ValueError naming the parameter, its value and the valid range."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _strategies import build

import linprobe_theory as lt


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(d=10, k=2, m=8, n=10), r"m=8 is out of range: need ≥ 1 and ≤ 7"),  # m = d − k
        (dict(d=10, k=2, m=0, n=10), r"m=0 is out of range"),
        (dict(d=10, k=0, m=3, n=10), r"k=0 is out of range"),
        (dict(d=10, k=2, m=3, n=2), r"n=2 is out of range: need ≥ 3"),
        (dict(d=10, k=2, m=3, n=5, eps=-0.1), r"eps=-0.1 is out of range \[0, 1.41421\]"),
        (dict(d=10, k=2, m=3, n=5, eps=1.5), r"eps=1.5 is out of range"),
        (dict(d=10, k=2, m=3, n=5, eps=float("nan")), r"eps=nan must be finite"),
        (dict(d=10, k=2, m=3, n=5, coverage=0.0), r"coverage=0.0 is out of range \(0, 1\]"),
        (dict(d=10, k=4, m=3, n=5, coverage=0.5), r"coverage=0.5 needs k ≤ m"),
        (dict(d=10, k=2, m=3, n=5, subspace="diagonal"), r"subspace='diagonal' must be one of"),
        (dict(d=10, k=2, m=3, n=5, v_star_norm=0.0), r"v_star_norm=0.0 is out of range"),
        (dict(d=10, k=2, m=3, n=5, ood_id_weight=0.0), r"ood_id_weight=0.0 is out of range"),
        (dict(d=10.5, k=2, m=3, n=5), r"d must be an integer"),
    ],
)
def test_problem_spec_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lt.ProblemSpec(**kwargs)


def test_make_problem_validates_concrete_overrides():
    spec = lt.ProblemSpec(d=10, k=2, m=3, n=5)
    with pytest.raises(ValueError, match=r"eps=2.0 is out of range"):
        lt.make_problem(spec, key=jax.random.key(0), eps=2.0)
    with pytest.raises(ValueError, match="unknown overrides"):
        lt.make_problem(spec, key=jax.random.key(0), d=3)
    with pytest.raises(ValueError, match="coverage can only be overridden"):
        lt.make_problem(spec, key=jax.random.key(0), coverage=0.5)


def _arrays(problem):
    return dict(X=problem.X, y=problem.y, B_star=problem.B_star, v_star=problem.v_star, B0=problem.B0)


@pytest.mark.parametrize(
    "name, bad, match",
    [
        ("X", np.ones(5), r"X must be a 2-D array"),
        ("y", np.ones(7), r"y must have shape \(8,\), got \(7,\)"),
        ("B0", np.ones((2, 11)), r"B0 must have shape \(2, 12\), got \(2, 11\)"),
        ("B_star", np.ones((3, 12)), r"B_star must have shape \(2, 12\)"),
        ("v_star", np.ones(3), r"v_star must have shape \(2,\)"),
    ],
)
def test_from_arrays_rejects_wrong_shapes(name, bad, match):
    arrays = _arrays(build((12, 2, 4, 8), seed=0))
    arrays[name] = bad
    with pytest.raises(ValueError, match=match):
        lt.Problem.from_arrays(**arrays)


@pytest.mark.parametrize("name", ["X", "y", "B_star", "v_star", "B0"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_from_arrays_rejects_non_finite(name, value):
    arrays = {k: np.array(v) for k, v in _arrays(build((12, 2, 4, 8), seed=0)).items()}
    arrays[name].flat[0] = value
    with pytest.raises(ValueError, match=rf"{name} contains 1 non-finite value"):
        lt.Problem.from_arrays(**arrays)


def test_from_arrays_rejects_data_outside_the_overparameterised_regime():
    rng = np.random.default_rng(0)
    problem = build((12, 2, 4, 8), seed=0)
    X = rng.normal(size=(20, 12))  # rank 12 = d: m ≥ d − k
    with pytest.raises(ValueError, match=r"m=12 is out of range: need ≥ 1 and ≤ 9"):
        lt.Problem.from_arrays(**{**_arrays(problem), "X": X, "y": np.zeros(20)})


def test_fine_tune_rejects_bad_heads_and_times():
    problem = build((12, 2, 4, 8), seed=0)
    with pytest.raises(ValueError, match=r"v0 must have shape \(2,\), got \(3,\)"):
        lt.fine_tune(problem, jnp.ones(3), t_final=1.0)
    with pytest.raises(ValueError, match=r"v0 contains 1 non-finite"):
        lt.fine_tune(problem, jnp.array([1.0, jnp.nan]), t_final=1.0)
    with pytest.raises(ValueError, match=r"t_final=-1.0 is out of range"):
        lt.fine_tune(problem, jnp.ones(2), t_final=-1.0)
    with pytest.raises(ValueError, match=r"save_at must be strictly increasing times in \[0, t_final=1\]"):
        lt.fine_tune(problem, jnp.ones(2), t_final=1.0, save_at=jnp.array([0.0, 2.0]))
    with pytest.raises(ValueError, match=r"save_at must be a non-empty 1-D array"):
        lt.fine_tune(problem, jnp.ones(2), t_final=1.0, save_at=jnp.ones((2, 2)))
    with pytest.raises(ValueError, match=r"coordinates='polar' must be one of"):
        lt.fine_tune(problem, jnp.ones(2), t_final=1.0, coordinates="polar")
    with pytest.raises(ValueError, match=r"rtol=0.0 is out of range"):
        lt.linear_probe(problem, jnp.ones(2), t_final=1.0, rtol=0.0)


def test_theory_functions_need_orthonormal_rows():
    problem = build((12, 2, 4, 8), seed=0, eps=0.1)
    skewed = problem.with_B0(1.1 * problem.B0)
    v0 = lt.zero_head(problem)
    for fn in (lambda p: lt.ft_ood_lower_bound(p, v0), lt.lp_ood_upper_bound, lt.coverage_cosine):
        with pytest.raises(ValueError, match=r"B0 must have orthonormal rows"):
            fn(skewed)
    with pytest.raises(ValueError, match=r"B0 must have orthonormal rows"):
        lt.feature_error(skewed.B0, problem.B_star)
    with pytest.raises(ValueError, match=r"eps=-1.0 is out of range"):
        lt.ft_ood_lower_bound(problem, v0, eps=-1.0)
    with pytest.raises(ValueError, match=r"phi=-0.5 is out of range"):
        lt.head_with_alignment(problem, -0.5)
    with pytest.raises(ValueError, match=r"cos_theta_max needs dim R ≤ dim T"):
        lt.cos_theta_max(jnp.eye(4)[:, :3], jnp.eye(4)[:, :2])


def test_messages_name_value_and_range():
    with pytest.raises(ValueError) as info:
        lt.ProblemSpec(d=10, k=2, m=9, n=10, eps=0.1)
    message = str(info.value)
    assert "m=9" in message and "1 ≤ m < d − k" in message and "d=10" in message
    assert math.isclose(lt.ProblemSpec(d=10, k=2, m=3, n=3, eps=0.0).theta, 0.0)
