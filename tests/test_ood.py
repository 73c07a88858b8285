"""OOD risk of `f(x) = vᵀσ(Bx)` against the teacher `v⋆ᵀσ⋆(B⋆x)`, `x ~ N(0, Σ)`, checked against
references computed independently of `linprobe_theory.ood`:

- the linear closed form `(Bᵀv − w⋆)ᵀΣ(Bᵀv − w⋆)` (`lt.ood_loss`), to round-off;
- the Gaussian moments `E[σ_i(c_iᵀx) σ_j(c_jᵀx)]` (the arc-cosine kernel for two ReLUs) by
  one-dimensional quadrature: for positively homogeneous σ (identity, ReLU) and
  `(u, w) = L z`, `z ~ N(0, I₂)` in polar form `z = r e_φ`, the integrand is `r² h(φ)` with
  `E[r²] = 2` and φ uniform, so `E[σ_i(u) σ_j(w)] = (1/π) ∫₀^{2π} h(φ) dφ`; `h` is a
  trigonometric polynomial between the kinks, so Gauss–Legendre on each piece is exact to
  round-off;
- for k = 1 the whole risk as a two-dimensional Gaussian integral (`scipy.integrate.dblquad`
  over the four quadrants cut by the ReLU kinks);
- Monte Carlo on `ood_inputs` with a tolerance of 5 standard errors estimated from the sample
  itself (a false failure has probability ≈ 6e-7 per check under the CLT).

Σ is isotropic, two-subspace (`ood_id_weight ≠ ood_orth_weight`) or a dense random SPD matrix
(`Problem.with_ood`), so the factored-Σ code paths (`c I + W diag(λ) Wᵀ` with `c = 0` and `c > 0`)
are all exercised. Every expectation is over Gaussian inputs, so the tests run eagerly on small
`DIMS`; the Monte Carlo tests draw 1e5–2e5 inputs.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _strategies import DIMS, build, dims, seeds
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

import linprobe_theory as lt
from linprobe_theory.ood import (
    CLOSED_FORM_ACTIVATIONS,
    _gaussian_moments,
    gaussian_ood_risk,
    ood_inputs,
    ood_logistic_loss,
    ood_zero_one_error,
    sampled_ood_risk,
)

Z_MAX = 5.0  # Monte Carlo tolerance in standard errors
N_MC = 200_000  # inputs per Monte Carlo risk estimate
N_MOMENT = 100_000  # inputs for the second-moment and 0–1 checks

# (ood_id_weight, ood_orth_weight, dense): isotropic, two-subspace both ways, a dense random Σ.
sigma_kinds = st.sampled_from([(1.0, 1.0, False), (4.0, 1.0, False), (0.25, 2.0, False), (1.0, 1.0, True)])
activation_pairs = st.sampled_from(list(itertools.product(CLOSED_FORM_ACTIVATIONS, repeat=2)))
state_kinds = st.sampled_from(["random", "near_teacher"])


def make_problem(dims, seed, sigma_kind=(1.0, 1.0, False), teacher="identity", eps=0.3):
    id_w, orth_w, dense = sigma_kind
    problem = build(
        dims, seed, eps=eps, ood_id_weight=id_w, ood_orth_weight=orth_w, teacher_activation=teacher
    )
    if dense:
        d = problem.d
        A = np.random.default_rng(seed + 1).normal(size=(d, d))
        problem = problem.with_ood(A @ A.T / d + 0.1 * np.eye(d))
    return problem


def random_state(problem, seed, kind="random"):
    """A random `(v, B)`: around B0 (`"random"`), or within 1e-3 of `(v⋆, B⋆)` (`"near_teacher"`,
    where the student/teacher pairs are nearly parallel, cos θ ≈ 1)."""
    rng = np.random.default_rng(seed)
    k, d = problem.k, problem.d
    if kind == "near_teacher":
        v = np.asarray(problem.v_star) + 1e-3 * rng.normal(size=k)
        B = np.asarray(problem.B_star) + 1e-3 * rng.normal(size=(k, d))
    else:
        v = rng.normal(size=k)
        B = np.asarray(problem.B0) + 0.5 * rng.normal(size=(k, d))
    return jnp.asarray(v), jnp.asarray(B)


def np_act(name):
    return {"identity": lambda h: h, "relu": lambda h: np.maximum(h, 0.0)}[name]


def dense_sigma(problem):
    return np.asarray(problem.ood.dense())


# --- independent references -----------------------------------------------------------------------


GL_NODES, GL_WEIGHTS = np.polynomial.legendre.leggauss(40)


def moment_by_quadrature(G2, relu_i, relu_j):
    """`E[σ_i(u) σ_j(w)]`, `(u, w) ~ N(0, G2)`, by the polar reduction of the module docstring;
    40-point Gauss–Legendre on each piece between kinks (the piece is an entire function of φ on
    an interval ≤ 2π, so the rule is exact to round-off)."""
    vals, vecs = np.linalg.eigh(G2)
    L = vecs * np.sqrt(np.maximum(vals, 0.0))  # G2 = L Lᵀ, even when G2 is singular
    acts = [np_act("relu" if r else "identity") for r in (relu_i, relu_j)]
    kinks = []
    for row, relu in zip(L, (relu_i, relu_j), strict=True):
        if relu and np.any(row != 0):
            base = math.atan2(row[1], row[0]) + math.pi / 2  # row · e_φ = 0
            kinks += [base % (2 * math.pi), (base + math.pi) % (2 * math.pi)]
    edges = np.unique(np.r_[0.0, kinks, 2 * math.pi])
    total = 0.0
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        phi = 0.5 * (b - a) * GL_NODES + 0.5 * (a + b)
        e = np.stack([np.cos(phi), np.sin(phi)])  # 2 × nodes
        total += 0.5 * (b - a) * GL_WEIGHTS @ (acts[0](L[0] @ e) * acts[1](L[1] @ e))
    return total / math.pi


def term_scale(problem, v, B):
    """`|α|ᵀ N |α|`, `N_ij = ‖c_i‖_Σ ‖c_j‖_Σ`, `C = [B; B⋆]`, `α = [v; −v⋆]`: the size of the terms
    of `αᵀMα` (every |M_ij| ≤ N_ij by Cauchy–Schwarz), against which round-off is measured."""
    C = np.concatenate([np.asarray(B), np.asarray(problem.B_star)])
    norms = np.sqrt(np.einsum("id,de,ie->i", C, dense_sigma(problem), C))
    alpha = np.abs(np.r_[np.asarray(v), -np.asarray(problem.v_star)])
    return float((alpha @ norms) ** 2)


def risk_by_moments(problem, v, B, activation):
    """`αᵀ M α` with every `M_ij` from `moment_by_quadrature`, `C = [B; B⋆]`, `α = [v; −v⋆]`, Σ
    dense. Returns the risk and `|α|ᵀ N |α|`, `N_ij = ‖c_i‖_Σ ‖c_j‖_Σ`, the scale of its terms."""
    C = np.concatenate([np.asarray(B), np.asarray(problem.B_star)])
    G = C @ dense_sigma(problem) @ C.T
    alpha = np.r_[np.asarray(v), -np.asarray(problem.v_star)]
    k = problem.k
    relu = [activation == "relu"] * k + [problem.teacher_activation == "relu"] * k
    M = np.empty_like(G)
    for i, j in itertools.combinations_with_replacement(range(2 * k), 2):
        G2 = G[np.ix_([i, j], [i, j])]
        M[i, j] = M[j, i] = moment_by_quadrature(G2, relu[i], relu[j])
    return alpha @ M @ alpha, term_scale(problem, v, B), M, G, relu


def risk_by_dblquad(G2, v, v_star, act, act_star):
    """k = 1: `∫∫ (v σ(u) − v⋆ σ⋆(w))² N(u, w; 0, G2) du dw` over the four quadrants."""
    inv = np.linalg.inv(G2)
    norm = 1.0 / (2 * math.pi * math.sqrt(np.linalg.det(G2)))
    s, s_star = np_act(act), np_act(act_star)

    def f(w, u):
        q = inv[0, 0] * u * u + 2 * inv[0, 1] * u * w + inv[1, 1] * w * w
        return (v * s(u) - v_star * s_star(w)) ** 2 * norm * math.exp(-0.5 * q)

    total = 0.0
    for (u0, u1), (w0, w1) in itertools.product([(-np.inf, 0.0), (0.0, np.inf)], repeat=2):
        total += integrate.dblquad(f, u0, u1, w0, w1, epsabs=1e-13, epsrel=1e-11)[0]
    return total


def squared_errors(problem, v, B, x, activation):
    """Per-sample `(f(x) − f⋆(x))²` in numpy, without the library's model or teacher."""
    x = np.asarray(x)
    f = np_act(activation)(x @ np.asarray(B).T) @ np.asarray(v)
    f_star = np_act(problem.teacher_activation)(x @ np.asarray(problem.B_star).T) @ np.asarray(problem.v_star)
    return (f - f_star) ** 2


# --- the linear closed form -------------------------------------------------------------------------


@given(dims, seeds, sigma_kinds, state_kinds)
def test_identity_risk_is_the_closed_form_ood_loss(dims, seed, sigma_kind, state_kind):
    """Two identities: `αᵀ G α = (Bᵀv − w⋆)ᵀΣ(Bᵀv − w⋆)`. Both are float64 round-off of the same
    quadratic form; 1e-12 relative leaves ~1e3 ulps (measured ≤ 6e-16 for random states). Near
    the teacher the risk is ~1e-6 of its terms, so there the bound is relative to the terms'
    scale `|α|ᵀN|α|` instead."""
    problem = make_problem(dims, seed, sigma_kind)
    v, B = random_state(problem, seed, state_kind)
    got = float(gaussian_ood_risk(problem, v, B))
    want = float(lt.ood_loss(problem, v, B))
    scale = term_scale(problem, v, B) if state_kind == "near_teacher" else want
    assert abs(got - want) <= 1e-12 * scale, (got, want)


@pytest.mark.parametrize("lead", [(3,), (2, 3)])
@pytest.mark.parametrize("teacher", CLOSED_FORM_ACTIVATIONS)
@pytest.mark.parametrize("activation", CLOSED_FORM_ACTIVATIONS)
def test_risk_maps_over_leading_axes(lead, teacher, activation):
    """Leading axes of `(v, B)` (e.g. a trajectory's times) map: each entry is the single-state
    value, and for two identities the batched `lt.ood_loss`."""
    problem = make_problem(DIMS[0], 7, (4.0, 1.0, False), teacher)
    rng = np.random.default_rng(0)
    k, d = problem.k, problem.d
    v = jnp.asarray(rng.normal(size=lead + (k,)))
    B = jnp.asarray(np.asarray(problem.B0) + 0.5 * rng.normal(size=lead + (k, d)))
    got = np.asarray(gaussian_ood_risk(problem, v, B, activation))
    assert got.shape == lead
    flat_v, flat_B = v.reshape(-1, k), B.reshape(-1, k, d)
    each = np.array(
        [float(gaussian_ood_risk(problem, a, b, activation)) for a, b in zip(flat_v, flat_B, strict=True)]
    )
    np.testing.assert_allclose(got.reshape(-1), each, rtol=1e-13)
    if activation == teacher == "identity":
        np.testing.assert_allclose(got, np.asarray(lt.ood_loss(problem, v, B)), rtol=1e-12)


# --- the arc-cosine kernel and mixed moments ----------------------------------------------------------


@settings(max_examples=10)
@given(dims, seeds, sigma_kinds, activation_pairs, state_kinds)
def test_moments_and_risk_match_quadrature(dims, seed, sigma_kind, pair, state_kind):
    """Every `M_ij` (student–student, student–teacher, teacher–teacher; ReLU–ReLU is the
    arc-cosine kernel, ReLU–identity `K/2`) and the risk `αᵀMα` against the polar quadrature.
    The quadrature is exact to ~1e-14 relative, the closed form to round-off in arccos and √;
    1e-10 of the terms' scale `N_ij = ‖c_i‖‖c_j‖` (resp. `|α|ᵀN|α|`) is far above both (measured
    ≤ 5e-15) and far below any formula error (a wrong kernel is off by O(1) of the scale)."""
    activation, teacher = pair
    problem = make_problem(dims, seed, sigma_kind, teacher)
    v, B = random_state(problem, seed, state_kind)
    want, scale, M_ref, G, relu = risk_by_moments(problem, v, B, activation)
    flags = jnp.asarray(relu)
    M = np.asarray(_gaussian_moments(jnp.asarray(G), flags, flags))
    norms = np.sqrt(np.diag(G))
    np.testing.assert_array_less(np.abs(M - M_ref), 1e-10 * np.outer(norms, norms) + 1e-300)
    got = float(gaussian_ood_risk(problem, v, B, activation))
    assert abs(got - want) <= 1e-10 * scale, (got, want, scale)


def test_moment_special_cases():
    """Exact values: `E[relu(u)²] = ‖a‖²/2`, `E[relu(u) relu(−u)] = 0`, `E[relu(u) u] = ‖a‖²/2`,
    orthogonal ReLUs `‖a‖‖b‖/(2π)`, and a zero vector gives zero moments (no 0/0)."""
    a, b = np.array([3.0, 0.0]), np.array([0.0, 2.0])
    C = np.stack([a, -a, b, np.zeros(2), a])
    G = jnp.asarray(C @ C.T)
    relu = jnp.array([True, True, True, True, False])
    M = np.asarray(_gaussian_moments(G, relu, relu))
    assert np.all(np.isfinite(M))
    np.testing.assert_allclose(M[0, 0], 9.0 / 2, rtol=1e-15)
    np.testing.assert_allclose(M[0, 1], 0.0, atol=1e-15)
    np.testing.assert_allclose(M[0, 4], 9.0 / 2, rtol=1e-15)
    np.testing.assert_allclose(M[0, 2], 6.0 / (2 * math.pi), rtol=1e-15)
    np.testing.assert_array_equal(M[3], 0.0)
    np.testing.assert_allclose(M[4, 4], 9.0, rtol=1e-15)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("activation, teacher", list(itertools.product(CLOSED_FORM_ACTIVATIONS, repeat=2)))
def test_k1_risk_matches_a_two_dimensional_gaussian_integral(activation, teacher, seed):
    """k = 1: the risk is a 2-D integral over `(u, w) = (bᵀx, b⋆ᵀx)`; dblquad on each quadrant
    (where the integrand is smooth) is asked for 1e-11 relative, so 1e-9 relative is safe (measured
    ≤ 2e-14)."""
    problem = make_problem((8, 1, 3, 5), seed, (3.0, 1.0, False), teacher)
    v, B = random_state(problem, seed)
    C = np.concatenate([np.asarray(B), np.asarray(problem.B_star)])
    G2 = C @ dense_sigma(problem) @ C.T
    want = risk_by_dblquad(G2, float(v[0]), float(problem.v_star[0]), activation, teacher)
    got = float(gaussian_ood_risk(problem, v, B, activation))
    assert abs(got - want) <= 1e-9 * want, (got, want)


def test_risk_is_zero_at_the_teacher():
    """`(v, B) = (v⋆, B⋆)` with σ = σ⋆: zero risk up to the round-off of `αᵀMα` (terms ~‖v⋆‖²)."""
    for teacher in CLOSED_FORM_ACTIVATIONS:
        problem = make_problem(DIMS[1], 3, (4.0, 1.0, False), teacher)
        risk = float(gaussian_ood_risk(problem, problem.v_star, problem.B_star, teacher))
        assert 0.0 <= risk <= 1e-14


# --- Monte Carlo on ood_inputs -----------------------------------------------------------------------


@settings(max_examples=5)
@given(dims, seeds, sigma_kinds)
def test_sampled_risk_agrees_with_the_closed_form(dims, seed, sigma_kind):
    """`sampled_ood_risk` on `N = 2e5` draws of `ood_inputs` is the numpy mean of the per-sample
    squared errors (1e-12, round-off), and lies within 5 standard errors of `gaussian_ood_risk`,
    the standard error `std(e²)/√N` estimated from the same sample (CLT: a false failure has
    probability ≈ 6e-7 per check; measured max |z| = 3.4 over 96 checks)."""
    x = None
    for teacher, activation in itertools.product(CLOSED_FORM_ACTIVATIONS, repeat=2):
        problem = make_problem(dims, seed, sigma_kind, teacher)
        if x is None:
            x = ood_inputs(problem, jax.random.key(seed), N_MC)
        v, B = random_state(problem, seed)
        e2 = squared_errors(problem, v, B, x, activation)
        sampled = float(sampled_ood_risk(problem, v, B, inputs=x, activation=activation))
        np.testing.assert_allclose(sampled, e2.mean(), rtol=1e-12)
        exact = float(gaussian_ood_risk(problem, v, B, activation))
        se = e2.std(ddof=1) / math.sqrt(N_MC)
        assert abs(sampled - exact) <= Z_MAX * se, (teacher, activation, sampled, exact, se)


@settings(max_examples=8)
@given(dims, seeds, sigma_kinds)
def test_ood_inputs_have_second_moment_sigma(dims, seed, sigma_kind):
    """The sample second moment `XᵀX/N` of `ood_inputs` against Σ entrywise: for zero-mean
    Gaussian x, `Var(x_i x_j) = Σ_ii Σ_jj + Σ_ij²`, so each entry is tested at 5 standard errors
    (union bound over ≤ 136 entries: false failure ≤ 1e-4; measured max z = 3.7 over 24 draws); the
    mean at 5·√(Σ_ii/N)."""
    problem = make_problem(dims, seed, sigma_kind)
    x = np.asarray(ood_inputs(problem, jax.random.key(seed), N_MOMENT))
    assert x.shape == (N_MOMENT, problem.d)
    sigma = dense_sigma(problem)
    diag = np.diag(sigma)
    se = np.sqrt((np.outer(diag, diag) + sigma**2) / N_MOMENT)
    z = np.abs(x.T @ x / N_MOMENT - sigma) / se
    assert z.max() <= Z_MAX, z.max()
    assert np.all(np.abs(x.mean(axis=0)) <= Z_MAX * np.sqrt(diag / N_MOMENT))


@pytest.mark.parametrize("sigma_kind", [(1.0, 1.0, False), (4.0, 0.5, False), (1.0, 1.0, True)])
def test_ood_inputs_are_gaussians_times_the_symmetric_root(sigma_kind):
    """The documented construction exactly: `x = g Σ^{1/2}`, `g = jax.random.normal(key, (N, d))`,
    `Σ^{1/2}` the symmetric root (here from numpy's eigh of the dense Σ), to 1e-12."""
    problem = make_problem(DIMS[0], 5, sigma_kind)
    key = jax.random.key(11)
    lam, U = np.linalg.eigh(dense_sigma(problem))
    root = (U * np.sqrt(lam)) @ U.T
    g = np.asarray(jax.random.normal(key, (64, problem.d)))
    np.testing.assert_allclose(np.asarray(ood_inputs(problem, key, 64)), g @ root, rtol=0, atol=1e-12)


# --- 0–1 error and logistic loss ----------------------------------------------------------------------


@pytest.mark.parametrize("teacher", CLOSED_FORM_ACTIVATIONS)
def test_zero_one_error_at_the_teacher_zero_head_and_flipped_head(teacher):
    """`(v⋆, B⋆)` with σ = σ⋆ makes no error. `v = 0` predicts `sign(0) = 0`, which the code counts
    as a disagreement with every nonzero `f⋆(x)`: error 1 for the linear teacher (f⋆ ≠ 0 a.s.), not
    0.5. The ReLU teacher is exactly 0 where all its units are off, and there `sign(0) = sign(0)`
    counts as agreement: the error is `P(f⋆ ≠ 0) = 1 − 2^{−k}` (isotropic Σ, orthonormal B⋆ rows:
    independent pre-activations), checked exactly against the sample and at 5 standard errors
    against `1 − 2^{−k}`. `v = −v⋆` flips every nonzero sign: error 1 for the linear teacher."""
    problem = make_problem(DIMS[1], 2, teacher=teacher)
    x = ood_inputs(problem, jax.random.key(2), N_MOMENT)
    vs, Bs = problem.v_star, problem.B_star

    def err(v, B=Bs):
        return float(ood_zero_one_error(problem, v, B, inputs=x, activation=teacher))

    assert err(vs) == 0.0
    if teacher == "identity":
        assert err(jnp.zeros_like(vs)) == 1.0
        assert err(-vs) == 1.0
        assert err(jnp.zeros_like(vs), problem.B0) == 1.0
    else:
        nonzero = float(np.mean(np.asarray(problem.teacher_outputs(x)) != 0))
        # Within half a count.
        assert abs(err(jnp.zeros_like(vs)) - nonzero) < 0.5 / N_MOMENT
        assert (
            abs(err(-vs) - nonzero) < 0.5 / N_MOMENT
        )  # v⋆ᵀrelu(B⋆x) is 0 or keeps its sign; −v⋆ flips every nonzero one
        p = 1.0 - 2.0 ** (-problem.k)
        assert abs(nonzero - p) <= Z_MAX * math.sqrt(p * (1 - p) / N_MOMENT), (nonzero, p)
    # Leading axes map: (v⋆, 0, −v⋆) at once.
    stacked = jnp.stack([vs, jnp.zeros_like(vs), -vs])
    batched = np.asarray(
        ood_zero_one_error(problem, stacked, jnp.stack([Bs] * 3), inputs=x, activation=teacher)
    )
    # To one ulp: under vmap XLA may divide by N as a multiplication by 1/N.
    np.testing.assert_allclose(batched, [err(vs), err(jnp.zeros_like(vs)), err(-vs)], rtol=2e-16, atol=0)


def test_zero_one_error_is_an_exact_float64_fraction():
    """The 0–1 error is a count over N: `count / N` in float64 (to one ulp), like every other loss
    here; a float32 mean would be 2.5e-8 off (0.8758099675 for 87581/1e5)."""
    problem = make_problem(DIMS[1], 2, teacher="relu")
    x = ood_inputs(problem, jax.random.key(2), N_MOMENT)
    err = ood_zero_one_error(problem, jnp.zeros(problem.k), problem.B_star, inputs=x, activation="relu")
    count = int(np.count_nonzero(np.asarray(problem.teacher_outputs(x)) != 0))
    assert err.dtype == jnp.float64
    assert float(err) == pytest.approx(count / N_MOMENT, rel=2e-16, abs=0)  # float32 would be off by 3e-8


def test_logistic_loss_along_a_scaled_teacher_head():
    """At `v = c v⋆`, `B = B⋆` (identity) the loss is `mean softplus(−c|f⋆(x)|)`: exactly `log 2`
    at c = 0, strictly decreasing in c, towards 0. For large c, `c · E[softplus(−c|z|)] →
    2 φ_s(0) ∫₀^∞ log(1 + e^{−t}) dt = π²/(6 s √(2π))`, z ~ N(0, s²), s² = w⋆ᵀΣw⋆ (relative
    correction O(1/c²) = 1e-6 at c = 1e3); checked at 5 sample standard errors."""
    problem = make_problem(DIMS[0], 4, (4.0, 1.0, False))
    x = ood_inputs(problem, jax.random.key(4), N_MOMENT)
    f_star = np.asarray(x) @ np.asarray(problem.w_star)
    cs = [0.0, 0.5, 1.0, 10.0, 100.0, 1000.0]
    losses = np.array(
        [float(ood_logistic_loss(problem, c * problem.v_star, problem.B_star, inputs=x)) for c in cs]
    )
    assert losses[0] == pytest.approx(math.log(2.0), rel=1e-15)
    assert np.all(np.diff(losses) < 0), losses
    np.testing.assert_allclose(
        losses, [np.mean(np.logaddexp(0.0, -c * np.abs(f_star))) for c in cs], rtol=1e-12
    )
    c = cs[-1]
    s = math.sqrt(float(problem.ood.quadratic_form(problem.w_star)))
    limit = math.pi**2 / (6 * s * math.sqrt(2 * math.pi))
    per_sample = c * np.logaddexp(0.0, -c * np.abs(f_star))
    se = per_sample.std(ddof=1) / math.sqrt(N_MOMENT)
    assert abs(c * losses[-1] - limit) <= Z_MAX * se + 1e-5 * limit, (c * losses[-1], limit, se)
    assert losses[-1] < 1e-2


# --- what has no closed form ------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["tanh", "gelu", "leaky_relu", lambda h: h])
def test_gaussian_risk_rejects_student_activations_without_closed_form(activation):
    problem = make_problem(DIMS[0], 0)
    name = activation if isinstance(activation, str) else "<lambda>"
    with pytest.raises(
        ValueError, match=rf"activation='{name}' has no closed form; choose one of \('identity', 'relu'\)"
    ):
        gaussian_ood_risk(problem, problem.v_star, problem.B0, activation)


@pytest.mark.parametrize("teacher", ["tanh", "gelu"])
def test_gaussian_risk_rejects_teacher_activations_without_closed_form(teacher):
    problem = make_problem(DIMS[0], 0, teacher=teacher)
    with pytest.raises(
        ValueError, match=rf"teacher_activation='{teacher}' has no closed form; choose one of"
    ):
        gaussian_ood_risk(problem, problem.v_star, problem.B0)


def test_gaussian_risk_accepts_the_library_relu_as_a_callable():
    """`jax.nn.relu` passed as a callable is the named ReLU: same value."""
    problem = make_problem(DIMS[0], 1, teacher="relu")
    v, B = random_state(problem, 1)
    assert float(gaussian_ood_risk(problem, v, B, jax.nn.relu)) == float(
        gaussian_ood_risk(problem, v, B, "relu")
    )


def test_gaussian_risk_rejects_a_custom_callable_that_is_only_named_relu():
    """A leaky ReLU (slope 0.1) that happens to be called `relu` has no closed form here; it must be
    refused (the closed form is taken only for the registered functions), not silently given the
    arc-cosine kernel of the true ReLU."""

    def relu(h):
        return jnp.maximum(h, 0.1 * h)

    problem = make_problem(DIMS[0], 1, teacher="relu")
    v, B = random_state(problem, 1)
    with pytest.raises(ValueError, match="no closed form"):
        gaussian_ood_risk(problem, v, B, relu)
