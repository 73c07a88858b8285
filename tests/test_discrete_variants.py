"""Discrete optimisers on the flow variants: momentum keeps the S⊥ invariance but not
balancedness; weight decay shrinks S⊥ features by the exact discrete factor; the variant
objectives keep S⊥ fixed under gradient descent, as their flows do."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _strategies import build

import linprobe_theory as lt

DIMS = (16, 3, 6, 12)


@pytest.fixture(scope="module")
def problem():
    return build(DIMS, seed=0, eps=0.1)


@pytest.fixture(scope="module")
def head(problem):
    return lt.random_head(problem, key=jax.random.key(1))


def _balancedness(traj, problem, head):
    return float(lt.balancedness_drift(traj.v[-1], traj.B[-1], head, problem.B0))


def test_momentum_keeps_s_perp_fixed_but_does_not_conserve_balancedness(problem, head):
    """Heavy-ball momentum's update is a sum of past gradients, so S⊥ stays fixed (≤ 1e-10), but
    `v vᵀ − B Bᵀ` is not its conserved quantity (the momentum flow's laws involve the
    velocities): at the same effective rate `η/(1 − β)` as gradient descent its drift is ~18×
    GD's at β = 0.9 (measured 0.16 vs 0.0087 at t = 2; bound: ≥ 5×), so no test may assert
    balancedness for momentum."""
    eta, steps = 1e-3, 2000
    gd = lt.train_discrete(problem, head, optimizer=optax.sgd(eta), num_steps=steps, save_every=steps)
    mom = lt.train_discrete(
        problem, head, optimizer=optax.sgd(eta * 0.1, momentum=0.9), num_steps=steps, save_every=steps
    )
    assert float(lt.orthogonal_drift(problem, mom.B[-1])) <= 1e-10
    assert _balancedness(mom, problem, head) >= 5 * _balancedness(gd, problem, head)
    assert _balancedness(mom, problem, head) > 1e-2


@pytest.mark.parametrize("on", ["B", "both"])
def test_weight_decay_under_gradient_descent_shrinks_s_perp_by_the_discrete_factor(problem, head, on):
    """One GD step on `L̂ + μ‖B‖²` maps `B P_{S⊥}` to `(1 − 2ημ) B P_{S⊥}` (the data gradient has
    no S⊥ part), so after N steps the factor is `(1 − 2ημ)^N` exactly (measured 5e-15)."""
    mu, eta, steps = 0.1, 1e-3, 500
    traj = lt.train_discrete(
        problem,
        head,
        optimizer=optax.sgd(eta),
        num_steps=steps,
        save_every=steps,
        regularizer=lt.WeightDecay(mu, on=on),
    )
    perp = jnp.eye(problem.d) - problem.Q_S @ problem.Q_S.T
    expected = (1 - 2 * eta * mu) ** steps * (problem.B0 @ perp)
    np.testing.assert_allclose(traj.B[-1] @ perp, expected, atol=1e-12)


@pytest.mark.parametrize(
    "variant",
    [dict(activation="relu"), dict(activation="tanh"), dict(loss="logistic"), dict(regularizer=lt.L2SP(0.5))],
    ids=["relu", "tanh", "logistic", "l2sp"],
)
def test_variant_objectives_keep_s_perp_fixed_under_minibatch_sgd(problem, head, variant):
    """Statement 1 for the discrete mode and every variant objective: minibatch SGD with momentum
    on `Σ ℓ(vᵀσ(Bxᵢ), yᵢ) + R` never moves B on S⊥ (≤ 1e-10) but does move it on S."""
    traj = lt.train_discrete(
        problem,
        head,
        optimizer=optax.sgd(1e-3, momentum=0.5),
        num_steps=400,
        save_every=100,
        batch_size=4,
        key=jax.random.key(3),
        **variant,
    )
    assert float(jnp.max(lt.orthogonal_drift(problem, traj.B))) <= 1e-10
    assert float(jnp.linalg.norm((traj.B[-1] - problem.B0) @ problem.Q_S)) > 1e-4


def test_discrete_mode_matches_the_flow_objective(problem, head):
    """Gradient descent on a variant approaches its gradient flow at first order (halving η
    halves the gap at fixed time), so both modes descend the same objective."""
    variant = dict(activation="tanh", regularizer=lt.WeightDecay(0.05, on="both"))
    T = 0.5
    flow = lt.fine_tune(problem, head, t_final=T, rtol=1e-11, grad_tol=None, **variant)
    errors = []
    for lr in (2e-4, 1e-4):
        steps = int(round(T / lr))
        traj = lt.train_discrete(
            problem, head, optimizer=optax.sgd(lr), num_steps=steps, save_every=steps, **variant
        )
        errors.append(float(jnp.linalg.norm(traj.B[-1] - flow.B[-1])))
    np.testing.assert_allclose(errors[1] / errors[0], 0.5, atol=0.05)
