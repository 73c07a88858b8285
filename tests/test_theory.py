"""Theory quantities: feature error, principal angles, coverage, head alignment, bounds.

Every quantity here is a closed form of O(1) numbers evaluated by a few SVDs, so the reference
comparisons use round-off tolerances (1e-12 absolute or 1e-9 relative, i.e. ≥ 1000× float64
round-off), except where a square root amplifies round-off (noted at the assertion).
"""

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _strategies import (
    DIMS,
    build,
    coverages,
    dims,
    eps_values,
    ft_bound_reference,
    head_kinds,
    make_head,
    perp_basis,
    phis,
    random_orthogonal,
    rank_deficient_problem,
    seeds,
    subspaces,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import linprobe_theory as lt
from linprobe_theory.theory import aligning_rotation


@given(dims=dims, seed=seeds, eps=st.floats(0.0, math.sqrt(2.0)), coverage=coverages, subspace=subspaces)
def test_constructed_problem_has_the_requested_feature_error(dims, seed, eps, coverage, subspace):
    """d(B0, B⋆) = eps exactly, and (by construction) every principal angle between the row
    spaces equals θ = 2 asin(eps/2). The error is the norm of a difference of O(1) matrices:
    absolute round-off ~1e-15, hence rtol 1e-9 with atol 1e-14 for eps → 0."""
    problem = build(dims, seed, eps, coverage, subspace=subspace)
    np.testing.assert_allclose(
        float(lt.feature_error(problem.B0, problem.B_star)), eps, rtol=1e-9, atol=1e-14
    )
    cosines = np.linalg.svd(np.asarray(problem.B0 @ problem.B_star.T), compute_uv=False)
    np.testing.assert_allclose(cosines, math.cos(2 * math.asin(eps / 2)), atol=1e-12)


def _brute_force_feature_error(B0, B_star):
    """min over the 2×2 orthogonal group (rotations and reflections) by a 0.5° grid followed by
    ternary search on the best bracket; no closed form involved."""

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


# The ternary search brackets the minimiser to ~1e-14 rad, but near the minimum the objective
# is flat to second order only where it is smooth; at a kink (two singular values crossing) the
# bracket still shrinks geometrically. 1e-7 absolute is far below any construction error we
# want to catch and well above the search's resolution.
BRUTE_FORCE_ATOL = 1e-7


@pytest.mark.parametrize("seed", range(4))
def test_feature_error_matches_brute_force_minimisation_over_rotations(seed):
    rng = np.random.default_rng(seed)
    d = 7
    B0 = np.linalg.qr(rng.normal(size=(d, 2)))[0].T
    B_star = np.linalg.qr(rng.normal(size=(d, 2)))[0].T
    exact = float(lt.feature_error(jnp.asarray(B0), jnp.asarray(B_star)))
    assert abs(exact - _brute_force_feature_error(B0, B_star)) <= BRUTE_FORCE_ATOL
    # and the closed form 2 sin(θ_max/2)
    cos_max = np.linalg.svd(B0 @ B_star.T, compute_uv=False).min()
    np.testing.assert_allclose(exact, 2 * math.sin(math.acos(min(cos_max, 1.0)) / 2), rtol=1e-9)


@settings(max_examples=8)
@given(
    seed=seeds,
    eps=st.sampled_from([1e-3, 0.1, 0.5, 1.2, math.sqrt(2.0)]),
    coverage=coverages,
    subspace=subspaces,
)
def test_feature_error_of_constructed_problems_matches_brute_force(seed, eps, coverage, subspace):
    """The requested eps, the library's feature_error and brute force agree on k = 2 problems."""
    problem = build((12, 2, 4, 8), seed, eps, coverage, subspace=subspace)
    brute = _brute_force_feature_error(np.asarray(problem.B0), np.asarray(problem.B_star))
    assert abs(brute - eps) <= BRUTE_FORCE_ATOL
    assert abs(float(lt.feature_error(problem.B0, problem.B_star)) - brute) <= BRUTE_FORCE_ATOL


@given(dims=dims, seed=seeds, eps=eps_values, coverage=coverages)
def test_polar_factor_is_the_minimising_rotation(dims, seed, eps, coverage):
    """‖B0 − U B⋆‖₂ at the polar factor equals feature_error and is ≤ the value at any other
    orthogonal U (rotations and reflections, any k)."""
    problem = build(dims, seed, eps, coverage)
    B0, Bs = np.asarray(problem.B0), np.asarray(problem.B_star)
    U_opt = np.asarray(aligning_rotation(problem.B0, problem.B_star))
    np.testing.assert_allclose(U_opt @ U_opt.T, np.eye(problem.k), atol=1e-12)
    best = np.linalg.norm(B0 - U_opt @ Bs, 2)
    np.testing.assert_allclose(float(lt.feature_error(problem.B0, problem.B_star)), best, atol=1e-13)
    for i, reflect in itertools.product(range(5), (False, True)):
        U = random_orthogonal(seed % 1000 + 17 * i, problem.k, reflect)
        assert best <= np.linalg.norm(B0 - U @ Bs, 2) + 1e-13


def _reframed(problem, U, via):
    """The same problem with the ground truth written in another frame: (U v⋆, U B⋆)."""
    U = jnp.asarray(U)
    if via == "tree_at":
        return eqx.tree_at(lambda p: (p.v_star, p.B_star), problem, (U @ problem.v_star, U @ problem.B_star))
    return lt.Problem.from_arrays(
        X=problem.X,
        y=problem.y,
        B_star=U @ problem.B_star,
        v_star=U @ problem.v_star,
        B0=problem.B0,
        sigma_ood=problem.ood,
    )


@given(
    dims=dims,
    seed=seeds,
    eps=eps_values,
    coverage=coverages,
    kind=head_kinds,
    phi=phis,
    reflect=st.booleans(),
    via=st.sampled_from(["tree_at", "from_arrays"]),
    id_w=st.sampled_from([1.0, 0.05]),
)
def test_phi_and_bound_are_invariant_to_the_ground_truth_frame(
    dims, seed, eps, coverage, kind, phi, reflect, via, id_w
):
    """(U v⋆, U B⋆) is the same predictor: φ, the aligned v⋆, the feature error and both bounds
    must not change, for rotations and reflections U."""
    problem = build(dims, seed, eps, coverage, ood_id_weight=id_w)
    v0 = make_head(problem, kind, seed, phi)
    rotated = _reframed(problem, random_orthogonal(seed % 10_000, problem.k, reflect), via)
    np.testing.assert_allclose(rotated.w_star, problem.w_star, atol=1e-12)
    np.testing.assert_allclose(lt.aligned_v_star(rotated), lt.aligned_v_star(problem), atol=1e-12)
    # Compare φ² (φ = √|…| amplifies round-off near 0: a 1e-16 change in φ² moves φ by 1e-8).
    np.testing.assert_allclose(
        lt.head_alignment_error(rotated, v0) ** 2, lt.head_alignment_error(problem, v0) ** 2, atol=1e-12
    )
    np.testing.assert_allclose(
        lt.ft_ood_lower_bound(rotated, v0), lt.ft_ood_lower_bound(problem, v0), rtol=1e-9, atol=1e-14
    )
    np.testing.assert_allclose(
        lt.lp_ood_upper_bound(rotated), lt.lp_ood_upper_bound(problem), rtol=1e-9, atol=1e-14
    )
    np.testing.assert_allclose(
        lt.feature_error(rotated.B0, rotated.B_star), lt.feature_error(problem.B0, problem.B_star), atol=1e-13
    )


@given(dims=dims, seed=seeds, eps=eps_values, coverage=coverages, subspace=subspaces)
def test_coverage_cosine_matches_principal_angle_with_explicit_complement(
    dims, seed, eps, coverage, subspace
):
    """coverage_cosine = cos θ_max(R0, S⊥) = σ_k(B0 · basis(S⊥)), with an explicit basis of S⊥.
    The library's √(1 − σ_max(B0 Q_S)²) loses accuracy only as the cosine → 0 (error ~1e-16/c),
    so 1e-10 holds for the cosines drawn here (≥ 0.6 when set; generic otherwise)."""
    problem = build(dims, seed, eps, coverage, subspace=subspace)
    explicit = lt.cos_theta_max(problem.B0.T, jnp.asarray(perp_basis(problem.Q_S)))
    np.testing.assert_allclose(lt.coverage_cosine(problem), explicit, atol=1e-10)
    numpy_value = np.linalg.svd(np.asarray(problem.B0) @ perp_basis(problem.Q_S), compute_uv=False)[-1]
    np.testing.assert_allclose(explicit, numpy_value, atol=1e-12)
    if coverage is not None:
        np.testing.assert_allclose(lt.coverage_cosine(problem), coverage, atol=1e-10)


def _problem_with_feature_inside_s():
    """B0's first row lies in S, so R0 ∩ S ≠ {0} and cos θ_max(R0, S⊥) = 0 exactly."""
    rng = np.random.default_rng(0)
    d, k, m, n = 12, 2, 4, 8
    frame = np.linalg.qr(rng.normal(size=(d, d)))[0]
    X = rng.normal(size=(n, m)) @ frame[:, :m].T
    B0 = np.stack([frame[:, 0], (frame[:, 1] + frame[:, 6]) / math.sqrt(2.0)])
    B_star = np.linalg.qr(rng.normal(size=(d, k)))[0].T
    v_star = rng.normal(size=k)
    return lt.Problem.from_arrays(X=X, y=X @ B_star.T @ v_star, B_star=B_star, v_star=v_star, B0=B0)


def test_coverage_cosine_is_accurate_when_a_feature_lies_in_s():
    problem = _problem_with_feature_inside_s()
    explicit = float(lt.cos_theta_max(problem.B0.T, jnp.asarray(perp_basis(problem.Q_S))))
    assert explicit <= 1e-14
    assert float(lt.coverage_cosine(problem)) <= 1e-12


def test_cos_theta_max_known_angles():
    e1, e2 = jnp.eye(3)[:, :1], jnp.eye(3)[:, 1:2]
    assert float(lt.cos_theta_max(e1, e1)) == pytest.approx(1.0)
    assert float(lt.cos_theta_max(e1, e2)) == pytest.approx(0.0)
    tilted = jnp.array([[math.cos(0.3)], [math.sin(0.3)], [0.0]])
    assert float(lt.cos_theta_max(tilted, e1)) == pytest.approx(math.cos(0.3))
    assert float(lt.cos_theta_max(e1, jnp.eye(3)[:, :2])) == pytest.approx(1.0)
    # Two planes in R^4 at principal angles 0.2 and 0.7: θ_max = 0.7.
    E = jnp.eye(4)[:, :2]
    F = jnp.array([[math.cos(0.2), 0], [0, math.cos(0.7)], [math.sin(0.2), 0], [0, math.sin(0.7)]])
    assert float(lt.cos_theta_max(E, F)) == pytest.approx(math.cos(0.7), abs=1e-14)


def test_head_alignment_special_heads():
    problem = build((16, 3, 6, 12), seed=0, eps=0.1, v_star_norm=1.4)
    vs = lt.aligned_v_star(problem)
    norm_sq = float(vs @ vs)
    assert norm_sq == pytest.approx(1.4**2)
    assert float(lt.head_alignment_error(problem, lt.zero_head(problem))) == pytest.approx(norm_sq)
    # φ = √|…| of a difference that is 0 up to ~1e-16: φ itself is ~1e-8 at most.
    assert float(lt.head_alignment_error(problem, vs)) == pytest.approx(0.0, abs=1e-7)
    assert float(lt.head_alignment_error(problem, -vs)) == pytest.approx(0.0, abs=1e-7)
    # An over-scaled head: v0 = 2 v⋆ gives φ² = |4‖v⋆‖⁴ − ‖v⋆‖⁴| = 3‖v⋆‖⁴.
    np.testing.assert_allclose(
        float(lt.head_alignment_error(problem, 2 * vs)) ** 2, 3 * norm_sq**2, rtol=1e-12
    )


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


@given(
    dims=dims,
    seed=seeds,
    eps=eps_values,
    coverage=coverages,
    kind=head_kinds,
    phi=phis,
    id_w=st.sampled_from([1.0, 0.05, 2.0]),
    v_star_norm=st.sampled_from([0.5, 1.0, 2.0]),
)
def test_ft_bound_matches_an_independent_numpy_evaluation(
    dims, seed, eps, coverage, kind, phi, id_w, v_star_norm
):
    """ft_ood_lower_bound against `ft_bound_reference` (explicit S⊥ basis, numpy polar factor,
    dense Σ), covering both branches of min(φ, φ²/‖w⋆‖) (‖v⋆‖ = 0.5 and 2) and clipping."""
    problem = build(dims, seed, eps, coverage, ood_id_weight=id_w, v_star_norm=v_star_norm)
    v0 = make_head(problem, kind, seed, phi)
    np.testing.assert_allclose(
        lt.ft_ood_lower_bound(problem, v0), ft_bound_reference(problem, v0), rtol=1e-8, atol=1e-14
    )


def test_ft_bound_scales_with_sigma_min():
    problem = build((16, 3, 6, 12), seed=4, eps=0.0, coverage=0.8)
    v0 = lt.zero_head(problem)
    base = float(lt.ft_ood_lower_bound(problem, v0))
    assert base > 0
    shifted = build((16, 3, 6, 12), seed=4, eps=0.0, coverage=0.8, ood_id_weight=0.25, ood_orth_weight=2.0)
    np.testing.assert_allclose(lt.ft_ood_lower_bound(shifted, v0), 0.25 * base, rtol=1e-9)


@given(
    dims=dims,
    seed=seeds,
    eps=st.sampled_from([0.0, 1e-3, 0.1, 0.5]),
    coverage=coverages,
    id_w=st.sampled_from([1.0, 0.1, 3.0]),
)
def test_lp_bound_matches_its_formula_and_derivation(dims, seed, eps, coverage, id_w):
    """lp_ood_upper_bound = σ_max(Σ) ε² ‖v⋆‖² (1 + σ_max(X)/σ_min(X B0ᵀ))², recomputed in numpy;
    and the identity its derivation rests on: v_lp = U v⋆ + A⁺ X (U B⋆ − B0)ᵀ U v⋆ (U the
    aligning rotation), checked against the library's closed-form LP limit."""
    problem = build(dims, seed, eps, coverage, ood_id_weight=id_w)
    X, B0, Bs, vs = (np.asarray(a) for a in (problem.X, problem.B0, problem.B_star, problem.v_star))
    A = X @ B0.T
    ratio = np.linalg.svd(X, compute_uv=False)[0] / np.linalg.svd(A, compute_uv=False)[-1]
    expected = max(id_w, 1.0) * eps**2 * (vs @ vs) * (1 + ratio) ** 2
    np.testing.assert_allclose(lt.lp_ood_upper_bound(problem), expected, rtol=1e-8, atol=1e-15)
    w, _, vt = np.linalg.svd(B0 @ Bs.T)
    U = w @ vt
    v_lp = U @ vs + np.linalg.pinv(A) @ X @ (U @ Bs - B0).T @ (U @ vs)
    np.testing.assert_allclose(lt.linear_probe_solution(problem), v_lp, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_lp_upper_bound_is_order_eps_squared(seed):
    """Our LP bound is O(ε²): halving ε quarters it (the data and B0 stay fixed)."""
    spec = lt.ProblemSpec(d=16, k=3, m=6, n=12, eps=0.02, coverage=0.9)
    key = jax.random.key(seed)
    values = [float(lt.lp_ood_upper_bound(lt.make_problem(spec, key=key, eps=e))) for e in (0.02, 0.01)]
    np.testing.assert_allclose(values[0] / values[1], 4.0, rtol=1e-6)


def test_lp_upper_bound_is_infinite_when_lp_is_underdetermined():
    """m < k: A = X B0ᵀ is rank deficient, LP's limit depends on v0 and the bound is +inf."""
    assert np.isinf(float(lt.lp_ood_upper_bound(rank_deficient_problem(), eps=0.1)))


def test_bounds_accept_eps_override_at_least_the_distance():
    problem = build((12, 2, 4, 8), seed=1, eps=0.1)
    v0 = lt.zero_head(problem)
    np.testing.assert_allclose(
        lt.ft_ood_lower_bound(problem, v0, eps=0.1), lt.ft_ood_lower_bound(problem, v0), rtol=1e-9
    )
    for a, b in itertools.pairwise([0.1, 0.2, 0.4]):
        assert float(lt.ft_ood_lower_bound(problem, v0, eps=a)) >= float(
            lt.ft_ood_lower_bound(problem, v0, eps=b)
        )
        assert float(lt.lp_ood_upper_bound(problem, eps=a)) < float(lt.lp_ood_upper_bound(problem, eps=b))


@pytest.mark.parametrize("dims", DIMS)
def test_theory_functions_are_traceable(dims):
    """Under jit the orthonormality checks are skipped, and the values are unchanged."""
    problem = build(dims, seed=2, eps=0.05, coverage=0.9)
    v0 = lt.random_head(problem, key=jax.random.key(0))
    eager = (lt.feature_error(problem.B0, problem.B_star), lt.ft_ood_lower_bound(problem, v0))
    jitted = jax.jit(lambda p, v: (lt.feature_error(p.B0, p.B_star), lt.ft_ood_lower_bound(p, v)))(
        problem, v0
    )
    np.testing.assert_allclose(jitted, eager, rtol=1e-12)
