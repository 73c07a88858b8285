"""The laws of the flow variants (docs/theory.md, "Extensions"): which survive an activation,
layerwise rates, weight decay, L2-SP and the logistic loss, and which break.

Tolerances. Smooth flows (identity, tanh, GELU, the logistic loss, every regulariser) are
integrated with rtol = 1e-8 and their conserved quantities drift by integration error only,
≤ C·rtol·scale as in test_dynamics.py (measured ≤ 3e-9 absolute here). ReLU and leaky ReLU
flows are non-smooth: a pre-activation can slide along the kink, where the solver advances at
the step floor `dtmin` and the chatter costs an O(dtmin) error (measured at dtmin 1e-4, t = 2, 4
seeds: per-neuron balancedness drift ≤ 1e-5 = 0.1·dtmin; full vs reduced ≤ 5.6e-4 = 5.6·dtmin),
so their tolerances are C·dtmin and each such law is also checked to converge as dtmin shrinks.
The S⊥ invariance holds whatever the step (every stage's increment lies in S), so it is ≤ 1e-10
for every variant.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _strategies import RTOL, build, make_head, seeds, time_grid
from hypothesis import given, settings
from hypothesis import strategies as st

import linprobe_theory as lt

DIMS = (16, 3, 6, 12)
T = 20.0
GRID = time_grid(T, num=20)
KINKED = ("relu", "leaky_relu")
SMOOTH = ("identity", "tanh", "gelu")
DTMIN = 1e-4
T_KINKED = 2.0  # ReLU flows chatter at dtmin while sliding: a short horizon keeps them cheap
C = 100  # integration error ≤ C·rtol·scale (measured C ≤ 1.4 in test_dynamics.py)

head_kinds = st.sampled_from(["zero", "random", "phi"])
eps_values = st.sampled_from([0.0, 0.1])
log_rates = st.floats(-1.0, 1.0)  # log10 of a rate in [0.1, 10]


def _solve_kwargs(activation, t_final=None):
    """Horizon, saves and step floor: kinked activations get dtmin and a shorter horizon."""
    if activation in KINKED:
        t = T_KINKED if t_final is None else t_final
        return dict(t_final=t, save_at=time_grid(t, num=20), grad_tol=None, dtmin=DTMIN, max_steps=500_000)
    t = T if t_final is None else t_final
    return dict(t_final=t, save_at=time_grid(t, num=20), grad_tol=None)


def _problem_and_head(seed, eps=0.1, kind="random", **spec):
    problem = build(DIMS, seed, eps, coverage=0.95, **spec)
    return problem, make_head(problem, kind, seed, phi=0.5)


def _moved_in_s(problem, traj):
    return float(jnp.linalg.norm((traj.B[-1] - problem.B0) @ problem.Q_S))


# --- law 1: pre-activations of inputs in S⊥ never move ----------------------------------------


@pytest.mark.parametrize("activation", SMOOTH + KINKED)
@settings(max_examples=3)
@given(seed=seeds, eps=eps_values, kind=head_kinds)
def test_preactivations_on_s_perp_never_move_for_every_activation(activation, seed, eps, kind):
    """`B(t) x = B0 x` for `x ∈ S⊥` (≤ 1e-10; measured ≤ 4e-14) while the features move inside S,
    for f = vᵀσ(Bx): `∇_B = Σᵢ ℓ'ᵢ (v ⊙ σ'(B xᵢ)) xᵢᵀ` has its rows in S."""
    problem, v0 = _problem_and_head(seed, eps, kind)
    traj = lt.fine_tune(problem, v0, coordinates="full", activation=activation, **_solve_kwargs(activation))
    assert float(np.max(lt.orthogonal_drift(problem, traj.B))) <= 1e-10
    assert _moved_in_s(problem, traj) > 1e-3


VARIANTS = {
    "rates": dict(learning_rates=(0.5, 3.0)),
    "l2sp": dict(regularizer=lt.L2SP(0.3)),
    "logistic": dict(loss="logistic"),
    "logistic_tanh": dict(loss="logistic", activation="tanh"),
    "l2sp_rates_gelu": dict(regularizer=lt.L2SP(0.1), learning_rates=(2.0, 0.5), activation="gelu"),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@settings(max_examples=3)
@given(seed=seeds, eps=eps_values, kind=head_kinds)
def test_s_perp_invariance_survives_rates_l2sp_and_the_logistic_loss(variant, seed, eps, kind):
    """Layerwise rates rescale the gradient, L2-SP's gradient `2λ(B − B0)` keeps `B − B0`'s rows
    in S, and any per-example loss has `∇_B = Σᵢ ℓ'ᵢ v xᵢᵀ`: S⊥ stays fixed (≤ 1e-10)."""
    problem, v0 = _problem_and_head(seed, eps, kind)
    traj = lt.fine_tune(problem, v0, coordinates="full", **_solve_kwargs(None), **VARIANTS[variant])
    assert float(np.max(lt.orthogonal_drift(problem, traj.B))) <= 1e-10
    assert _moved_in_s(problem, traj) > 1e-3


# --- law 2: per-neuron balancedness for positively homogeneous activations --------------------


def _neuron_invariant(traj, rates=(1.0, 1.0)):
    """`vᵢ²/η_v − ‖bᵢ‖²/η_B` for each neuron i, at each saved time: `(T, k)`."""
    return traj.v**2 / rates[0] - jnp.sum(traj.B**2, axis=-1) / rates[1]


def _neuron_drift(traj, rates=(1.0, 1.0)):
    inv = _neuron_invariant(traj, rates)
    return float(jnp.max(jnp.abs(inv - inv[0])))


@pytest.mark.parametrize("activation", KINKED)
@settings(max_examples=3)
@given(seed=seeds, kind=head_kinds, log_eta_B=log_rates)
def test_per_neuron_balancedness_is_conserved_for_relu_and_leaky_relu(activation, seed, kind, log_eta_B):
    """`σ(h) = σ'(h) h` makes `∂t vᵢ²/η_v = ∂t ‖bᵢ‖²/η_B`, so `vᵢ²/η_v − ‖bᵢ‖²/η_B` is conserved.
    The non-smooth flow's error is O(dtmin): drift ≤ 10·dtmin, and it shrinks with dtmin (≥ 3×
    for a 10× smaller floor, unless it is already at integration error)."""
    problem, v0 = _problem_and_head(seed, 0.1, kind)
    rates = (1.0, 10.0**log_eta_B)
    drifts = {}
    for dtmin in (DTMIN, DTMIN / 10):
        kwargs = _solve_kwargs(activation) | dict(dtmin=dtmin, max_steps=2_000_000)
        traj = lt.fine_tune(
            problem, v0, coordinates="full", activation=activation, learning_rates=rates, **kwargs
        )
        drifts[dtmin] = _neuron_drift(traj, rates)
    scale = 1.0 + float(jnp.max(traj.v**2)) / rates[0] + 1.0 / rates[1]
    assert drifts[DTMIN] <= 10 * DTMIN * scale, drifts
    assert drifts[DTMIN / 10] <= max(drifts[DTMIN] / 3, C * RTOL * scale), drifts


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_per_neuron_balancedness_drifts_for_tanh_and_gelu(activation):
    """Neither is positively homogeneous, so the per-neuron quantity moves by O(0.1) (measured
    0.15 for tanh, 0.27 for GELU at t = 20), far above integration error: the law above can fail."""
    problem, v0 = _problem_and_head(seed=1)
    traj = lt.fine_tune(problem, v0, coordinates="full", activation=activation, **_solve_kwargs(activation))
    assert _neuron_drift(traj) > 1e-3


# --- law 3: layerwise rates -----------------------------------------------------------------


@settings(max_examples=6)
@given(seed=seeds, eps=eps_values, kind=head_kinds, log_eta_v=log_rates, log_eta_B=log_rates)
def test_layerwise_rates_conserve_the_rescaled_balancedness(seed, eps, kind, log_eta_v, log_eta_B):
    """`∂t v vᵀ/η_v = ∂t B Bᵀ/η_B` along `∂t v = −η_v ∇_v`, `∂t B = −η_B ∇_B` (linear model), so
    `v vᵀ/η_v − B Bᵀ/η_B` is conserved to integration error (measured ≤ 3e-9)."""
    problem, v0 = _problem_and_head(seed, eps, kind)
    rates = (10.0**log_eta_v, 10.0**log_eta_B)
    traj = lt.fine_tune(problem, v0, coordinates="full", learning_rates=rates, **_solve_kwargs(None))
    M = traj.v[:, :, None] * traj.v[:, None, :] / rates[0] - traj.B @ jnp.swapaxes(traj.B, -1, -2) / rates[1]
    drift = float(jnp.max(jnp.abs(M - M[0])))
    scale = 1.0 + float(jnp.max(jnp.sum(traj.v**2, axis=-1))) / rates[0] + problem.k / rates[1]
    assert drift <= C * RTOL * scale, (drift, scale)


def test_a_small_feature_rate_converges_to_linear_probing_at_first_order():
    """`η_B → 0` freezes the features: at a fixed time FT's head is LP's head plus O(η_B), so
    halving η_B halves the gap (ratio 0.5 ± 0.05), and the features moved by O(η_B)."""
    problem, v0 = _problem_and_head(seed=4)
    t = 5.0
    lp = lt.linear_probe(problem, v0, t_final=t, grad_tol=None, rtol=1e-11)
    gaps, moves = [], []
    for eta_B in (1e-3, 5e-4, 2.5e-4):
        ft = lt.fine_tune(problem, v0, t_final=t, grad_tol=None, rtol=1e-11, learning_rates=(1.0, eta_B))
        gaps.append(float(jnp.linalg.norm(ft.v[-1] - lp.v[-1])))
        moves.append(float(jnp.linalg.norm(ft.B[-1] - problem.B0)))
    np.testing.assert_allclose(np.array(gaps[1:]) / np.array(gaps[:-1]), 0.5, atol=0.05)
    np.testing.assert_allclose(np.array(moves[1:]) / np.array(moves[:-1]), 0.5, atol=0.05)


# --- law 4: weight decay and L2-SP ------------------------------------------------------------


def _perp(problem, B):
    return B - (B @ problem.Q_S) @ problem.Q_S.T


@settings(max_examples=6)
@given(
    seed=seeds,
    mu=st.floats(1e-3, 0.2),
    lam=st.sampled_from([0.0, 0.05, 0.5]),
    on=st.sampled_from(["B", "both"]),
    log_eta_B=log_rates,
)
def test_weight_decay_shrinks_s_perp_features_by_the_exact_factor(seed, mu, lam, on, log_eta_B):
    """With `μ‖B‖²` (and L2-SP `λ‖B − B0‖²`) the S⊥ part obeys `∂t s = −η_B(2μ s + 2λ(s − 1))`,
    data-free: `B(t) x = s(t) B0 x` on S⊥, `s = c + (1 − c) e^{−2η_B(μ+λ)t}`, `c = λ/(μ+λ)`
    (`e^{−2η_B μ t}` without L2-SP), to integration error relative to `‖B0 P_{S⊥}‖`."""
    problem, v0 = _problem_and_head(seed)
    eta_B = 10.0**log_eta_B
    regs = [lt.WeightDecay(mu, on=on)] + ([lt.L2SP(lam)] if lam else [])
    traj = lt.fine_tune(
        problem, v0, coordinates="full", regularizer=regs, learning_rates=(1.0, eta_B), **_solve_kwargs(None)
    )
    c = lam / (mu + lam)
    s = c + (1.0 - c) * np.exp(-2.0 * eta_B * (mu + lam) * np.asarray(traj.t))
    expected = s[:, None, None] * np.asarray(_perp(problem, problem.B0))
    err = float(np.max(np.abs(np.asarray(_perp(problem, traj.B)) - expected)))
    assert err <= C * RTOL, err
    assert _moved_in_s(problem, traj) > 1e-3


@pytest.mark.parametrize("activation", ["identity", "relu", "tanh"])
@pytest.mark.parametrize("reg", ["wd_both", "wd_B", "l2sp"])
def test_lp_limit_with_regularisers_is_the_ridge_closed_form(activation, reg):
    """LP regresses on the frozen features `A = σ(X B0ᵀ)`: with `μ‖v‖²` (weight decay on both
    layers) its limit is ridge regression `(AᵀA + μI)⁻¹Aᵀy`; a penalty on B alone is constant
    while B is frozen, so with it the limit is least squares. Checked in numpy (exact algebra,
    1e-10) and against the LP flow run to convergence (to t = 10⁴, or until its gradient norm is
    below 1e-8 — far past its slowest rate here; LP is smooth in v for every σ)."""
    problem, v0 = _problem_and_head(seed=2, teacher_activation=activation)
    regularizer = {
        "wd_both": lt.WeightDecay(0.3, on="both"),
        "wd_B": lt.WeightDecay(0.3),
        "l2sp": lt.L2SP(0.3),
    }[reg]
    flow = lt.make_flow(activation=activation, regularizer=regularizer)
    A = np.asarray(lt.ACTIVATIONS[activation](problem.X @ problem.B0.T))
    mu_v = 0.3 if reg == "wd_both" else 0.0
    ridge = np.linalg.solve(A.T @ A + mu_v * np.eye(problem.k), A.T @ np.asarray(problem.y))
    np.testing.assert_allclose(lt.lp_limit(problem, v0, flow), ridge, rtol=1e-10, atol=1e-10)
    lp = lt.linear_probe(
        problem, v0, t_final=1e4, grad_tol=1e-8, rtol=1e-10, activation=activation, regularizer=regularizer
    )
    np.testing.assert_allclose(lp.v[-1], ridge, rtol=1e-6, atol=1e-8)


# --- law 5: the logistic loss --------------------------------------------------------------


@settings(max_examples=6)
@given(seed=seeds, eps=eps_values, kind=head_kinds)
def test_logistic_loss_keeps_s_perp_fixed_and_conserves_balancedness(seed, eps, kind):
    """`∇_v = Σᵢ ℓ'ᵢ B xᵢ`, `∇_B = Σᵢ ℓ'ᵢ v xᵢᵀ` for the linear model: S⊥ is fixed (≤ 1e-10) and
    `v vᵀ − B Bᵀ` is conserved (≤ C·rtol·scale; measured 2.6e-9), while the training labels
    `sign(v⋆ᵀB⋆x)` are fitted (the loss falls)."""
    problem, v0 = _problem_and_head(seed, eps, kind)
    traj = lt.fine_tune(problem, v0, coordinates="full", loss="logistic", **_solve_kwargs(None))
    assert float(np.max(lt.orthogonal_drift(problem, traj.B))) <= 1e-10
    drift = float(np.max(lt.balancedness_drift(traj.v, traj.B, v0, problem.B0)))
    scale = 1.0 + float(jnp.max(jnp.sum(traj.v**2, axis=-1)))
    assert drift <= C * RTOL * scale, drift
    labels = jnp.sign(problem.y)
    loss = [
        float(jnp.sum(jax.nn.softplus(-labels * (problem.X @ (B.T @ v)))))
        for v, B in ((v0, problem.B0), (traj.v[-1], traj.B[-1]))
    ]
    assert loss[1] < loss[0]


# --- law 7 and coordinates: every variant is the same flow in every coordinate system ---------


def _custom_identity(h):
    return h


@pytest.mark.parametrize("coordinates", ["reduced", "full"])
def test_a_custom_identity_activation_reproduces_the_linear_flow(coordinates):
    """The general path `σ(X Bᵀ) v` with σ = a callable identity against the linear fast path
    (`X (Bᵀ v)`; the diagonal Gram form in reduced coordinates): the same ODE, evaluated with
    other round-off, so they agree to ~1e-13 (bound 1e-10)."""
    problem, v0 = _problem_and_head(seed=5)
    kwargs = _solve_kwargs(None) | dict(coordinates=coordinates)
    named = lt.fine_tune(problem, v0, **kwargs)
    custom = lt.fine_tune(problem, v0, activation=_custom_identity, **kwargs)
    assert float(jnp.max(jnp.abs(named.B - custom.B))) <= 1e-10
    assert float(jnp.max(jnp.abs(named.v - custom.v))) <= 1e-10


FULL_VS_REDUCED = {
    "tanh": dict(activation="tanh"),
    "gelu": dict(activation="gelu"),
    "relu": dict(activation="relu"),
    "rates": dict(learning_rates=(0.3, 3.0)),
    "weight_decay_both": dict(regularizer=lt.WeightDecay(0.05, on="both"), learning_rates=(1.0, 0.7)),
    "l2sp": dict(regularizer=lt.L2SP(0.3)),
    "wd_and_l2sp_tanh": dict(regularizer=[lt.WeightDecay(0.02), lt.L2SP(0.1)], activation="tanh"),
    "logistic": dict(loss="logistic"),
}


@pytest.mark.parametrize("variant", list(FULL_VS_REDUCED))
@settings(max_examples=2)
@given(seed=seeds, kind=head_kinds)
def test_reduced_coordinates_are_exact_for_every_variant(variant, seed, kind):
    """`(v, Z = B E)` with `B = s B0 + (Z − s Z0)Eᵀ` against `(v, B)` integrated in full: the same
    trajectory to integration error (≤ C·rtol·scale; measured ≤ 2e-9), or O(dtmin) for ReLU, whose
    chatter differs between the two (≤ 10·dtmin·scale; measured ≤ 5.6e-4 at dtmin 1e-4, t = 2)."""
    problem, v0 = _problem_and_head(seed, 0.1, kind)
    variant_kwargs = FULL_VS_REDUCED[variant]
    kwargs = _solve_kwargs(variant_kwargs.get("activation")) | variant_kwargs
    full = lt.fine_tune(problem, v0, coordinates="full", **kwargs)
    red = lt.fine_tune(problem, v0, coordinates="reduced", **kwargs)
    scale = 1.0 + max(float(jnp.max(jnp.abs(full.v))), float(jnp.max(jnp.abs(full.B))))
    tol = 10 * DTMIN * scale if "dtmin" in kwargs else C * RTOL * scale
    assert float(jnp.max(jnp.abs(full.B - red.B))) <= tol
    assert float(jnp.max(jnp.abs(full.v - red.v))) <= tol


# --- LP-FT for the variants ----------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_lpft_with_perfect_features_is_stationary_for_a_teacher_of_its_form(activation):
    """ε = 0 and a teacher `v⋆ᵀσ(B⋆x)` of the student's form: LP's closed-form head is `v⋆`
    (A = σ(X B0ᵀ) has full column rank), the start of FT is a zero of the training loss, so
    LP-FT stays there (it moves only by the round-off in `v_lp`'s residual, measured ≤ 1.5e-9 over
    t = 20; bound 1e-7, while FT from a random head moves by O(0.1)), as in the paper's linear
    case."""
    problem, v0 = _problem_and_head(seed=3, eps=0.0, teacher_activation=activation)
    traj = lt.lp_ft(problem, v0, activation=activation, **_solve_kwargs(activation))
    np.testing.assert_allclose(traj.v[0], problem.v_star, atol=1e-9)
    assert float(jnp.max(jnp.abs(traj.B - problem.B0))) <= 1e-7
    assert float(jnp.max(jnp.abs(traj.v - problem.v_star))) <= 1e-7


def test_lpft_with_the_logistic_loss_starts_from_the_lp_flow():
    """No closed form: LP-FT's head is the LP flow's state at the end of the same solve."""
    problem, v0 = _problem_and_head(seed=6)
    kwargs = dict(t_final=T, loss="logistic")
    lp = lt.linear_probe(problem, v0, **kwargs)
    lpft = lt.lp_ft(problem, v0, save_at=jnp.array([0.0, T]), **kwargs)
    np.testing.assert_allclose(lpft.v[0], lp.v[-1], rtol=1e-12, atol=1e-12)
    assert bool(lpft.ok)
    assert math.isfinite(float(jnp.max(jnp.abs(lpft.B))))


class _UserSquaredLoss(lt.Loss):
    """The squared loss written as a user's own `Loss` (so it takes the general path)."""

    name = "user_squared"

    def __call__(self, f, y):
        return jnp.sum((f - y) ** 2)


def test_a_user_defined_loss_plugs_in_and_takes_the_general_path():
    """A `Loss` subclass passed as `loss=` is used as written: the squared loss re-implemented by
    a user reproduces the built-in one (the general `X E` path against the Gram form) to ~1e-13
    (bound 1e-10), and keeps S⊥ fixed in full coordinates; LP-FT runs the LP flow for it (no
    closed form is assumed) and lands on the same head as the closed form."""
    problem, v0 = _problem_and_head(seed=7)
    kwargs = _solve_kwargs(None)
    builtin = lt.fine_tune(problem, v0, **kwargs)
    user = lt.fine_tune(problem, v0, loss=_UserSquaredLoss(), **kwargs)
    assert float(jnp.max(jnp.abs(builtin.B - user.B))) <= 1e-10
    full = lt.fine_tune(problem, v0, loss=_UserSquaredLoss(), coordinates="full", **kwargs)
    assert float(np.max(lt.orthogonal_drift(problem, full.B))) <= 1e-10
    lpft = lt.lp_ft(problem, v0, loss=_UserSquaredLoss(), t_final=1e3, grad_tol=1e-9)
    np.testing.assert_allclose(lpft.v[0], lt.linear_probe_solution(problem, v0), rtol=1e-6, atol=1e-8)
