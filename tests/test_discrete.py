"""Discrete optimisers (optax): the S⊥ invariance survives GD/SGD/momentum but not Adam,
balancedness drifts at O(step) per unit time, GD approaches gradient flow, divergence is caught."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _strategies import build

import linprobe_theory as lt
from linprobe_theory.discrete import train_discrete
from linprobe_theory.dynamics import SolveStatus

DIMS = (16, 3, 6, 12)


@pytest.fixture(scope="module")
def problem():
    return build(DIMS, seed=0, eps=0.1)


@pytest.fixture(scope="module")
def head(problem):
    return lt.random_head(problem, key=jax.random.key(1))


@pytest.mark.parametrize(
    "optimizer, batch_size",
    [
        (optax.sgd(1e-3), None),
        (optax.sgd(1e-3), 4),
        (optax.sgd(1e-3, momentum=0.9), 4),
        (optax.sgd(3e-3, nesterov=True, momentum=0.5), None),
    ],
    ids=["gd", "sgd", "momentum", "nesterov"],
)
def test_linear_optimisers_keep_s_perp_features_fixed(problem, head, optimizer, batch_size):
    traj = train_discrete(
        problem,
        head,
        optimizer=optimizer,
        num_steps=1000,
        save_every=100,
        batch_size=batch_size,
        key=jax.random.key(2),
    )
    assert bool(traj.ok)
    assert float(jnp.max(lt.orthogonal_drift(problem, traj.B))) <= 1e-10
    assert float(lt.train_loss(problem, traj.v[-1], traj.B[-1])) < 0.1 * float(
        lt.train_loss(problem, head, problem.B0)
    )


def test_adam_moves_s_perp_features(problem, head):
    """Coordinate-wise rescaling breaks the invariance: theory.md lists Adam as an exception."""
    traj = train_discrete(problem, head, optimizer=optax.adam(1e-2), num_steps=500, save_every=100)
    assert float(lt.orthogonal_drift(problem, traj.B[-1])) > 1e-3


def test_linear_probe_mode_freezes_features(problem, head):
    traj = train_discrete(
        problem, head, optimizer=optax.sgd(5e-3), num_steps=20000, save_every=5000, method="lp"
    )
    np.testing.assert_array_equal(traj.B[-1], problem.B0)
    np.testing.assert_allclose(traj.v[-1], lt.linear_probe_solution(problem, head), atol=1e-6)


def test_gradient_descent_approaches_gradient_flow(problem, head):
    """Explicit Euler on the flow: at fixed time T = η N the error is O(η), so halving η halves it;
    balancedness drifts by O(η²) per step, i.e. O(η) at fixed T."""
    T = 0.5
    flow = lt.fine_tune(problem, head, t_final=T, rtol=1e-11, atol=1e-13, grad_tol=None)
    errors, drifts = [], []
    for lr in (2e-4, 1e-4):
        steps = int(round(T / lr))  # N steps of size η integrate the flow up to t = η N
        traj = train_discrete(problem, head, optimizer=optax.sgd(lr), num_steps=steps, save_every=steps)
        errors.append(float(jnp.linalg.norm(traj.B[-1] - flow.B[-1])))
        drifts.append(float(lt.balancedness_drift(traj.v[-1], traj.B[-1], head, problem.B0)))
    np.testing.assert_allclose(errors[1] / errors[0], 0.5, atol=0.05)
    np.testing.assert_allclose(drifts[1] / drifts[0], 0.5, atol=0.05)


def test_divergence_is_detected_and_reported(problem, head):
    traj = train_discrete(problem, head, optimizer=optax.sgd(1.0), num_steps=200, save_every=20, check=False)
    assert int(traj.status) == SolveStatus.DIVERGED and int(traj.diverged_at) < 200
    assert np.all(np.isfinite(traj.B)) and np.all(np.isfinite(traj.v))  # the last finite state, never NaN
    with pytest.raises(lt.SolveError, match="diverged at step"):
        train_discrete(problem, head, optimizer=optax.sgd(1.0), num_steps=200, save_every=20)


def test_bad_arguments(problem, head):
    with pytest.raises(ValueError, match="num_steps=10 must be a multiple of save_every=3"):
        train_discrete(problem, head, optimizer=optax.sgd(1e-3), num_steps=10, save_every=3)
    with pytest.raises(ValueError, match=r"batch_size=99 is out of range"):
        train_discrete(
            problem, head, optimizer=optax.sgd(1e-3), num_steps=10, batch_size=99, key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="batch_size needs a key"):
        train_discrete(problem, head, optimizer=optax.sgd(1e-3), num_steps=10, batch_size=2)
    with pytest.raises(ValueError, match="method='sam' must be one of"):
        train_discrete(problem, head, optimizer=optax.sgd(1e-3), num_steps=10, method="sam")
