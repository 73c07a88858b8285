"""Bad input raises ValueError naming the parameter, its value and the valid range."""

import math

import equinox as eqx
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
        (dict(d=10, k=2, m=3, n=5.0), r"n must be an integer"),
        (dict(d=10, k=2, m=3, n=5, eps=float("inf")), r"eps=inf must be finite"),
        (dict(d=10, k=2, m=3, n=5, eps=math.sqrt(2) + 1e-9), r"eps=.* is out of range \[0, 1.41421\]"),
        (dict(d=10, k=2, m=3, n=5, coverage=1.1), r"coverage=1.1 is out of range \(0, 1\]"),
        (dict(d=10, k=2, m=7, n=7, coverage=0.5), r"coverage=0.5 needs k ≤ m and m \+ 2k ≤ d"),
        (dict(d=10, k=6, m=3, n=5, eps=0.1), r"eps=0.1 > 0 needs 2k ≤ d"),
        (dict(d=10, k=2, m=3, n=5, ood_orth_weight=-1.0), r"ood_orth_weight=-1.0 is out of range"),
        (dict(d=10, k=2, m=3, n=5, label_noise=-0.1), r"label_noise=-0.1 is out of range"),
        (dict(d=10, k=2, m=3, n=5, input_scale=0.0), r"input_scale=0.0 is out of range"),
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
        ("X", np.ones((2, 8, 12)), r"X must be a 2-D array"),
        ("B0", np.ones(12), r"B0 must be a 2-D array"),
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


def test_from_arrays_rejects_bad_sigma_ood():
    arrays = _arrays(build((12, 2, 4, 8), seed=0))
    with pytest.raises(ValueError, match=r"sigma_ood must have shape \(12, 12\), got \(5, 5\)"):
        lt.Problem.from_arrays(**arrays, sigma_ood=np.eye(5))
    with pytest.raises(ValueError, match=r"sigma_ood contains 144 non-finite"):
        lt.Problem.from_arrays(**arrays, sigma_ood=np.full((12, 12), np.nan))
    with pytest.raises(ValueError, match=r"sigma_ood has dimension 5, expected d=12"):
        lt.Problem.from_arrays(**arrays, sigma_ood=lt.OODCovariance.isotropic(5))
    with pytest.raises(ValueError, match=r"sigma_ood must be positive definite"):
        lt.Problem.from_arrays(**arrays, sigma_ood=np.diag(np.r_[np.ones(11), -1.0]))


def test_with_b0_and_with_ood_validate():
    problem = build((12, 2, 4, 8), seed=0)
    with pytest.raises(ValueError, match=r"B0 must have shape \(2, 12\), got \(3, 12\)"):
        problem.with_B0(np.ones((3, 12)))
    with pytest.raises(ValueError, match=r"B0 contains 24 non-finite"):
        problem.with_B0(np.full((2, 12), np.nan))
    with pytest.raises(ValueError, match=r"sigma_ood has dimension 5, expected d=12"):
        problem.with_ood(np.eye(5))


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
    with pytest.raises(ValueError, match=r"atol=-1.0 is out of range"):
        lt.fine_tune(problem, jnp.ones(2), t_final=1.0, atol=-1.0)
    with pytest.raises(ValueError, match=r"grad_tol=0.0 is out of range"):
        lt.lp_ft(problem, t_final=1.0, grad_tol=0.0)
    with pytest.raises(ValueError, match=r"t_final=nan must be finite"):
        lt.fine_tune(problem, jnp.ones(2), t_final=float("nan"))
    with pytest.raises(ValueError, match=r"t_final=0.0 is out of range"):
        lt.linear_probe(problem, jnp.ones(2), t_final=0.0)


@pytest.mark.parametrize("method", ["fine_tune", "linear_probe", "lp_ft"])
@pytest.mark.parametrize(
    "v0, match",
    [
        (np.ones(3), r"v0 must have shape \(2,\), got \(3,\)"),
        (np.ones((2, 1)), r"v0 must have shape \(2,\), got \(2, 1\)"),
        (np.array([1.0, np.nan]), r"v0 contains 1 non-finite value"),
        (np.array([np.inf, -np.inf]), r"v0 contains 2 non-finite value"),
    ],
)
def test_every_method_rejects_bad_heads(method, v0, match):
    problem = build((12, 2, 4, 8), seed=0)
    with pytest.raises(ValueError, match=match):
        getattr(lt, method)(problem, v0, t_final=1.0)


@pytest.mark.parametrize(
    "save_at",
    [
        [0.0, 2.0],  # beyond t_final
        [-0.1, 0.5],  # negative
        [0.5, 0.1],  # decreasing
        [0.2, 0.2],  # repeated
        [0.0, float("nan")],
    ],
)
def test_save_at_must_be_increasing_times_in_the_interval(save_at):
    problem = build((12, 2, 4, 8), seed=0)
    with pytest.raises(ValueError, match=r"save_at must be strictly increasing times in \[0, t_final=1\]"):
        lt.fine_tune(problem, jnp.ones(2), t_final=1.0, save_at=jnp.asarray(save_at))


@pytest.mark.parametrize("save_at", [np.ones((2, 2)), np.array(0.5), np.zeros(0)])
def test_save_at_must_be_a_non_empty_vector(save_at):
    problem = build((12, 2, 4, 8), seed=0)
    with pytest.raises(ValueError, match=r"save_at must be a non-empty 1-D array"):
        lt.linear_probe(problem, jnp.ones(2), t_final=1.0, save_at=save_at)


@pytest.mark.parametrize("max_steps", [0, -1])
def test_max_steps_must_be_a_positive_integer(max_steps):
    problem = build((12, 2, 4, 8), seed=0)
    with pytest.raises(ValueError, match="max_steps"):
        lt.fine_tune(problem, jnp.ones(2), t_final=1.0, max_steps=max_steps)


@pytest.mark.parametrize("distortion", ["scaled", "sheared"])
def test_theory_functions_need_orthonormal_rows(distortion):
    problem = build((12, 2, 4, 8), seed=0, eps=0.1)
    B0 = np.array(problem.B0)
    if distortion == "scaled":
        B0 = 1.1 * B0
    else:
        B0[1] += 0.05 * B0[0]  # same row space, rows no longer orthogonal
    skewed = problem.with_B0(B0)
    v0 = lt.zero_head(problem)
    for fn in (lambda p: lt.ft_ood_lower_bound(p, v0), lt.lp_ood_upper_bound, lt.coverage_cosine):
        with pytest.raises(ValueError, match=r"B0 must have orthonormal rows"):
            fn(skewed)
    with pytest.raises(ValueError, match=r"B0 must have orthonormal rows"):
        lt.feature_error(skewed.B0, problem.B_star)
    bad_star = eqx.tree_at(lambda p: p.B_star, problem, jnp.asarray(2.0 * problem.B_star))
    with pytest.raises(ValueError, match=r"B_star must have orthonormal rows"):
        lt.feature_error(problem.B0, bad_star.B_star)
    for fn in (lambda p: lt.ft_ood_lower_bound(p, v0), lt.lp_ood_upper_bound):
        with pytest.raises(ValueError, match=r"B_star must have orthonormal rows"):
            fn(bad_star)
    with pytest.raises(ValueError, match=r"eps=-0.5 is out of range"):
        lt.lp_ood_upper_bound(problem, eps=-0.5)
    with pytest.raises(ValueError, match=r"eps=inf must be finite"):
        lt.ft_ood_lower_bound(problem, v0, eps=float("inf"))
    with pytest.raises(ValueError, match=r"v0 must have shape \(2,\)"):
        lt.ft_ood_lower_bound(problem, np.ones(3))
    with pytest.raises(ValueError, match=r"v0 contains 1 non-finite"):
        lt.head_alignment_error(problem, np.array([np.nan, 1.0]))
    with pytest.raises(ValueError, match=r"std=-1.0 is out of range"):
        lt.random_head(problem, key=jax.random.key(0), std=-1.0)
    with pytest.raises(ValueError, match=r"phi=nan must be finite"):
        lt.head_with_alignment(problem, float("nan"))
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


@pytest.mark.parametrize("shape", [(3, 12), (2, 5)])
def test_feature_error_rejects_mismatched_shapes(shape):
    with pytest.raises(ValueError, match="B_star"):
        lt.feature_error(jnp.eye(2, 12), jnp.eye(*shape))


def test_head_with_alignment_refuses_orthogonal_norm_without_key():
    problem = build((12, 2, 4, 8), seed=0, eps=0.1)
    with pytest.raises(ValueError, match="orthogonal_norm"):
        lt.head_with_alignment(problem, 0.5, orthogonal_norm=0.3)


def test_head_with_alignment_rejects_negative_orthogonal_norm():
    problem = build((12, 2, 4, 8), seed=0, eps=0.1)
    with pytest.raises(ValueError, match="orthogonal_norm"):
        lt.head_with_alignment(problem, 0.5, key=jax.random.key(0), orthogonal_norm=-0.3)


def test_from_eigh_requires_orthonormal_basis():
    basis = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]).T  # two equal columns
    with pytest.raises(ValueError, match="basis"):
        lt.OODCovariance.from_eigh(basis, [0.5, 0.5], floor=1.0)


@pytest.mark.parametrize("rank_rtol", [-1.0, float("nan"), 1.5])
def test_from_arrays_validates_rank_rtol(rank_rtol):
    arrays = _arrays(build((12, 2, 4, 8), seed=0))
    with pytest.raises(ValueError, match="rank_rtol"):
        lt.Problem.from_arrays(**arrays, rank_rtol=rank_rtol)
