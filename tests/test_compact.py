"""`make_compact_problem`: the d-free construction. With coverage set it is the same problem as
`make_problem` up to an isometric embedding (reduced quantities, φ, the bound and FT's losses
agree to round-off for the same key); with coverage=None it has the same law (two-sample tests),
and an embedding of a compact problem leaves every reduced quantity unchanged."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import linprobe_theory as lt
from linprobe_theory.compact import compact_dimension, make_compact_problem
from linprobe_theory.comparison import compare_methods
from linprobe_theory.covariance import OODCovariance
from linprobe_theory.linalg import random_orthonormal_columns
from linprobe_theory.problem import Problem
from linprobe_theory.reduced import ReducedProblem


def _assert_same_reduced(a: ReducedProblem, b: ReducedProblem, rtol=1e-12):
    for f in dataclasses.fields(ReducedProblem):
        x, y = np.asarray(getattr(a, f.name)), np.asarray(getattr(b, f.name))
        scale = max(np.max(np.abs(x)), 1.0)
        assert np.max(np.abs(x - y)) <= rtol * scale, f.name


@pytest.mark.parametrize("d", [40, 3000])
def test_with_coverage_the_compact_problem_is_the_same_problem(d):
    spec = lt.ProblemSpec(d=d, k=2, m=8, n=16, coverage=0.8, ood_id_weight=0.5, ood_orth_weight=1.5)
    key = jax.random.key(7)
    full = lt.make_problem(spec, key=key, eps=0.2, label_noise=0.05)
    small = make_compact_problem(spec, key=key, eps=0.2, label_noise=0.05)
    assert small.d == compact_dimension(spec) == 12
    _assert_same_reduced(ReducedProblem.from_problem(full), ReducedProblem.from_problem(small))
    v0 = lt.random_head(full, key=jax.random.key(1))
    for fn in (lt.head_alignment_error, lt.ft_ood_lower_bound, lt.lp_ood_upper_bound):
        args = (full,) if fn is lt.lp_ood_upper_bound else (full, v0)
        small_args = (small,) if fn is lt.lp_ood_upper_bound else (small, v0)
        assert float(fn(*small_args)) == pytest.approx(float(fn(*args)), rel=1e-12)
    a = compare_methods(full, v0, t_final=10.0, num_saves=4)
    b = compare_methods(small, v0, t_final=10.0, num_saves=4)
    for key_ in ("ft_ood_final", "lp_ood", "lpft_ood_final"):
        # Same ODE from reduced data equal to ~1e-15: the solves agree far inside rtol 1e-8.
        assert float(b[key_]) == pytest.approx(float(a[key_]), rel=1e-10), key_


def _embed(problem: Problem, d: int, key) -> Problem:
    """The same problem in R^d through a random isometry U (d × d_small, UᵀU = I)."""
    U = random_orthonormal_columns(key, d, problem.d)
    Q_S = U @ problem.Q_S
    ood = OODCovariance.two_subspace(Q_S, problem.ood.scale + problem.ood.spectrum[0], problem.ood.scale)
    return Problem(
        X=problem.X @ U.T,
        y=problem.y,
        B_star=problem.B_star @ U.T,
        v_star=problem.v_star,
        B0=problem.B0 @ U.T,
        Q_S=Q_S,
        ood=ood,
    )


def test_embedding_a_compact_problem_leaves_its_reduced_quantities_unchanged():
    spec = lt.ProblemSpec(d=500, k=2, m=8, n=16, ood_id_weight=2.0, ood_orth_weight=0.5)
    small = make_compact_problem(spec, key=jax.random.key(3), eps=0.3)
    big = _embed(small, 500, jax.random.key(4))
    _assert_same_reduced(ReducedProblem.from_problem(small), ReducedProblem.from_problem(big))
    assert float(lt.coverage_cosine(big)) == pytest.approx(float(lt.coverage_cosine(small)), rel=1e-12)


def _statistics(problem, key):
    v0 = lt.random_head(problem, key=key)
    v_lp = lt.linear_probe_solution(problem)
    return jnp.array(
        [
            lt.coverage_cosine(problem),
            lt.head_alignment_error(problem, v0),
            lt.ood_loss(problem, v_lp, problem.B0),
            lt.feature_error(problem.B0, problem.B_star),
        ]
    )


def test_without_coverage_the_compact_problem_has_the_same_law():
    # B⋆ is Haar in R^d, so its overlap with S depends on d; the compact construction samples
    # that overlap exactly (Bartlett). Two-sample Kolmogorov–Smirnov tests on 300 + 300 draws;
    # each rejects a true null with probability 1e-3 (false alarm ≤ 4e-3 over the four), and the
    # keys are fixed, so the outcome is deterministic.
    spec = lt.ProblemSpec(d=60, k=2, m=10, n=20)
    keys = jax.random.split(jax.random.key(0), 300)

    def full(k):
        return _statistics(lt.make_problem(spec, key=k, eps=0.3), jax.random.fold_in(k, 1))

    def compact(k):
        return _statistics(
            make_compact_problem(spec, key=jax.random.fold_in(k, 99), eps=0.3), jax.random.fold_in(k, 1)
        )

    a, b = np.asarray(jax.vmap(full)(keys)), np.asarray(jax.vmap(compact)(keys))
    np.testing.assert_allclose(a[:, 3], 0.3, rtol=1e-10)  # ε exact in both
    np.testing.assert_allclose(b[:, 3], 0.3, rtol=1e-10)
    for i in range(3):
        assert stats.ks_2samp(a[:, i], b[:, i], method="exact").pvalue > 1e-3, i
    # The overlap with S does depend on d: at d = 10⁶ the coverage is ~1, not ~0.88 as at d = 60.
    far = lt.ProblemSpec(d=10**6, k=2, m=10, n=20)
    far_cov = jax.vmap(lambda k: lt.coverage_cosine(make_compact_problem(far, key=k, eps=0.3)))(keys[:50])
    assert float(jnp.min(far_cov)) > 0.999 > float(np.median(a[:, 0]))


def test_a_million_dimensions_cost_nothing():
    spec = lt.ProblemSpec(d=10**6, k=3, m=20, n=40, coverage=0.9)
    problem = make_compact_problem(spec, key=jax.random.key(0), eps=0.1)
    assert problem.X.shape == (40, 26) and problem.B0.shape == (3, 26)
    assert float(lt.coverage_cosine(problem)) == pytest.approx(0.9, rel=1e-12)


def test_the_compact_frame_has_the_law_of_a_haar_frame():
    # At d = m + p + 1 a wrong χ² degree of freedom or triangle convention changes the law a lot;
    # compare against a directly drawn Haar frame (KS on 4000 + 4000 draws of two statistics,
    # each rejecting a true null with probability 1e-3) and check E[TᵀT] = (m/d)·I exactly in
    # expectation (Monte-Carlo error ~1/√N).
    from linprobe_theory.compact import haar_frame_in_compact_form

    m, p, d, N = 3, 2, 6, 4000
    keys = jax.random.split(jax.random.key(5), N)
    compact = jax.vmap(lambda k: haar_frame_in_compact_form(k, d=d, m=m, p=p))(keys)
    direct = jax.vmap(lambda k: random_orthonormal_columns(k, d, p))(keys)
    T_c, T_d = compact[:, :m], direct[:, :m]
    np.testing.assert_allclose(
        jnp.einsum("nij,nik->njk", compact, compact), np.broadcast_to(np.eye(p), (N, p, p)), atol=1e-12
    )
    for stat in (
        lambda T: jnp.linalg.svd(T, compute_uv=False)[..., -1],
        lambda T: jnp.sum(T * T, axis=(-2, -1)),
    ):
        assert stats.ks_2samp(np.asarray(stat(T_c)), np.asarray(stat(T_d))).pvalue > 1e-3
    mean = np.mean(np.asarray(jnp.einsum("nij,nik->njk", T_c, T_c)), axis=0)
    np.testing.assert_allclose(mean, (m / d) * np.eye(p), atol=0.02)
