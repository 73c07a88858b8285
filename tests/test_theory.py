"""Theory quantities: feature error, principal angles, coverage, head alignment, bounds."""

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _strategies import build, coverages, dims, eps_values, head_kinds, make_head, phis, seeds
from hypothesis import given
from hypothesis import strategies as st

import linprobe_theory as lt


@given(
    dims=dims,
    seed=seeds,
    eps=st.floats(0.0, math.sqrt(2.0)),
    coverage=coverages,
    subspace=st.sampled_from(["random", "axis"]),
)
def test_constructed_problem_has_the_requested_feature_error(dims, seed, eps, coverage, subspace):
    problem = build(dims, seed, eps, coverage, subspace=subspace)
    np.testing.assert_allclose(
        float(lt.feature_error(problem.B0, problem.B_star)), eps, rtol=1e-9, atol=1e-14
    )
    np.testing.assert_allclose(problem.B0 @ problem.B0.T, np.eye(problem.k), atol=1e-12)
    np.testing.assert_allclose(problem.B_star @ problem.B_star.T, np.eye(problem.k), atol=1e-12)


def _brute_force_feature_error(B0, B_star):
    """min over the 2×2 orthogonal group (rotations and reflections) by grid + golden refinement."""

    def err(angle, reflect):
        c, s = math.cos(angle), math.sin(angle)
        U = np.array([[c, -s], [s, c]]) @ (np.diag([1.0, -1.0]) if reflect else np.eye(2))
        return np.linalg.norm(B0 - U @ B_star, 2)

    best = math.inf
    for reflect in (False, True):
        grid = np.linspace(-math.pi, math.pi, 721)
        a0 = grid[np.argmin([err(a, reflect) for a in grid])]
        lo, hi = a0 - 0.01, a0 + 0.01
        for _ in range(80):
            m1, m2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
            lo, hi = (lo, m2) if err(m1, reflect) < err(m2, reflect) else (m1, hi)
        best = min(best, err(0.5 * (lo + hi), reflect))
    return best


@pytest.mark.parametrize("seed", range(4))
def test_feature_error_matches_brute_force_minimisation_over_rotations(seed):
    rng = np.random.default_rng(seed)
    d = 7
    B0 = np.linalg.qr(rng.normal(size=(d, 2)))[0].T
    B_star = np.linalg.qr(rng.normal(size=(d, 2)))[0].T
    exact = float(lt.feature_error(jnp.asarray(B0), jnp.asarray(B_star)))
    assert abs(exact - _brute_force_feature_error(B0, B_star)) <= 1e-7
    # and the closed form 2 sin(θ_max/2)
    cos_max = np.linalg.svd(B0 @ B_star.T, compute_uv=False).min()
    np.testing.assert_allclose(exact, 2 * math.sin(math.acos(min(cos_max, 1.0)) / 2), rtol=1e-9)


def _random_rotation(seed, k):
    return jnp.asarray(np.linalg.qr(np.random.default_rng(seed).normal(size=(k, k)))[0])


@given(dims=dims, seed=seeds, eps=eps_values, coverage=coverages, kind=head_kinds, phi=phis)
def test_phi_and_bound_are_invariant_to_the_ground_truth_frame(dims, seed, eps, coverage, kind, phi):
    """(U v⋆, U B⋆) is the same predictor: φ and the FT bound must not change."""
    problem = build(dims, seed, eps, coverage)
    v0 = make_head(problem, kind, seed, phi)
    U = _random_rotation(seed, problem.k)
    rotated = eqx.tree_at(lambda p: (p.v_star, p.B_star), problem, (U @ problem.v_star, U @ problem.B_star))
    np.testing.assert_allclose(rotated.w_star, problem.w_star, atol=1e-12)
    np.testing.assert_allclose(
        lt.head_alignment_error(rotated, v0), lt.head_alignment_error(problem, v0), atol=1e-9
    )
    np.testing.assert_allclose(
        lt.ft_ood_lower_bound(rotated, v0), lt.ft_ood_lower_bound(problem, v0), atol=1e-12
    )
    np.testing.assert_allclose(
        lt.feature_error(rotated.B0, rotated.B_star), lt.feature_error(problem.B0, problem.B_star), atol=1e-12
    )


@given(
    dims=dims, seed=seeds, eps=eps_values, coverage=coverages, subspace=st.sampled_from(["random", "axis"])
)
def test_coverage_cosine_matches_principal_angle_with_explicit_complement(
    dims, seed, eps, coverage, subspace
):
    problem = build(dims, seed, eps, coverage, subspace=subspace)
    # Explicit orthonormal basis of S⊥ from a full SVD of Q_Sᵀ (small d only).
    perp = jnp.linalg.svd(problem.Q_S.T, full_matrices=True)[2][problem.m :].T
    explicit = lt.cos_theta_max(problem.B0.T, perp)
    np.testing.assert_allclose(lt.coverage_cosine(problem), explicit, atol=1e-10)
    if coverage is not None:
        np.testing.assert_allclose(lt.coverage_cosine(problem), coverage, atol=1e-10)


def test_cos_theta_max_known_angles():
    e1, e2 = jnp.eye(3)[:, :1], jnp.eye(3)[:, 1:2]
    assert float(lt.cos_theta_max(e1, e1)) == pytest.approx(1.0)
    assert float(lt.cos_theta_max(e1, e2)) == pytest.approx(0.0)
    tilted = jnp.array([[math.cos(0.3)], [math.sin(0.3)], [0.0]])
    assert float(lt.cos_theta_max(tilted, e1)) == pytest.approx(math.cos(0.3))
    assert float(lt.cos_theta_max(e1, jnp.eye(3)[:, :2])) == pytest.approx(1.0)


def test_head_alignment_special_heads():
    problem = build((16, 3, 6, 12), seed=0, eps=0.1)
    vs = lt.aligned_v_star(problem)
    norm_sq = float(vs @ vs)
    assert float(lt.head_alignment_error(problem, lt.zero_head(problem))) == pytest.approx(norm_sq)
    assert float(lt.head_alignment_error(problem, vs)) == pytest.approx(0.0, abs=1e-7)
    assert float(lt.head_alignment_error(problem, -vs)) == pytest.approx(0.0, abs=1e-7)


def test_ft_bound_closed_form_by_hand():
    """The bound recomputed term by term from its definition (ε = 0, coverage 0.8, zero head)."""
    problem = build((16, 3, 6, 12), seed=4, eps=0.0, coverage=0.8, v_star_norm=1.5)
    phi = 1.5**2
    w = 1.5
    rhs = 0.8 / math.sqrt(3) * min(phi, phi**2 / w) / (1 + w) ** 2
    np.testing.assert_allclose(lt.ft_ood_lower_bound(problem, lt.zero_head(problem)), rhs**2, rtol=1e-9)
    # A larger ε only weakens it, and a large enough ε makes it vacuous (clipped at 0).
    assert float(lt.ft_ood_lower_bound(problem, lt.zero_head(problem), eps=0.05)) < rhs**2
    assert float(lt.ft_ood_lower_bound(problem, lt.zero_head(problem), eps=1.0)) == 0.0


def test_ft_bound_scales_with_sigma_min():
    problem = build((16, 3, 6, 12), seed=4, eps=0.0, coverage=0.8)
    v0 = lt.zero_head(problem)
    base = float(lt.ft_ood_lower_bound(problem, v0))
    shifted = build((16, 3, 6, 12), seed=4, eps=0.0, coverage=0.8, ood_id_weight=0.25, ood_orth_weight=2.0)
    np.testing.assert_allclose(lt.ft_ood_lower_bound(shifted, v0), 0.25 * base, rtol=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_lp_upper_bound_is_order_eps_squared(seed):
    """Our LP bound is O(ε²): halving ε quarters it (the data and B0 stay fixed)."""
    spec = lt.ProblemSpec(d=16, k=3, m=6, n=12, eps=0.02, coverage=0.9)
    key = jax.random.key(seed)
    values = [float(lt.lp_ood_upper_bound(lt.make_problem(spec, key=key, eps=e))) for e in (0.02, 0.01)]
    np.testing.assert_allclose(values[0] / values[1], 4.0, rtol=1e-6)


def test_bounds_accept_eps_override_at_least_the_distance():
    problem = build((12, 2, 4, 8), seed=1, eps=0.1)
    v0 = lt.zero_head(problem)
    for a, b in itertools.pairwise([0.1, 0.2, 0.4]):
        assert float(lt.ft_ood_lower_bound(problem, v0, eps=a)) >= float(
            lt.ft_ood_lower_bound(problem, v0, eps=b)
        )
        assert float(lt.lp_ood_upper_bound(problem, eps=a)) <= float(lt.lp_ood_upper_bound(problem, eps=b))
