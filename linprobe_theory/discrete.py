"""Discrete-time training with optax optimisers: the explicit alternative to gradient flow.

Each step applies `optimizer` to the gradient of the training loss
`L̂(v, B) = ‖X_b Bᵀ v − y_b‖²` on a minibatch `b` (the full batch when `batch_size` is None),
rescaled by `n / |b|` so that a minibatch gradient is an unbiased estimate of the full one; or
of the same objective as a flow variant (`activation`, `loss`, `regularizer`, as in `fine_tune`).
The paper's invariance (features of inputs in S⊥ never move) holds for any optimiser whose
update is a linear combination of past gradients — gradient descent with any step, SGD,
momentum — but not for coordinate-wise rescaling (Adam, sign methods); `orthogonal_drift`
measures which. Non-finite states stop the run and are reported as `SolveStatus.DIVERGED`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int

from ._validation import check_int_range
from .coordinates import training_targets
from .flows import make_flow
from .integrate import SolveError, SolveStatus
from .problem import Problem, validate_head

METHODS = ("ft", "lp")


class DiscreteTrajectory(eqx.Module):
    """States every `save_every` steps (step 0 included).

    Attributes:
        step: saved step indices, `(T,)`.
        v, B: heads `(T, k)` and features `(T, k, d)`; after a divergence they hold the last
            finite state.
        status: `SolveStatus.COMPLETED` or `SolveStatus.DIVERGED`.
        diverged_at: first step whose update was non-finite (`num_steps` if none).
    """

    step: Int[Array, " T"]
    v: Float[Array, "T k"]
    B: Float[Array, "T k d"]
    status: Int[Array, ""]
    diverged_at: Int[Array, ""]

    @property
    def ok(self):
        return self.status == SolveStatus.COMPLETED


def _objective(flow, B0):
    """`scale · Σ_{i ∈ b} ℓ(f(xᵢ), yᵢ) + Σ_r R_r(v, B)`: the flow's objective on a minibatch."""

    def value(params, X, y, scale):
        v, B = params
        return flow.objective(lambda v, B: scale * flow.loss(flow.model(v, B, X), y), v, B, B0)

    return value


def train_discrete(
    problem: Problem,
    v0,
    *,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    method: str = "ft",
    save_every: int = 1,
    batch_size: int | None = None,
    key=None,
    check: bool = True,
    activation="identity",
    loss="squared",
    regularizer=None,
) -> DiscreteTrajectory:
    """Train `(v, B)` (method `"ft"`) or `v` alone (`"lp"`) from `(v0, B0)` with `optimizer`.

    Args:
        optimizer: any optax transformation, e.g. `optax.sgd(1e-3)`, `optax.sgd(1e-3, momentum=0.9)`.
        num_steps: number of updates; must be a multiple of `save_every`.
        batch_size: minibatch size (sampled without replacement each step, needs `key`);
            `None` is full-batch gradient descent.
        check: raise `SolveError` on divergence for a concrete run.
        activation: the model's activation, as in `fine_tune`.
        loss: the data-fit loss, as in `fine_tune`.
        regularizer: penalties added to the objective, as in `fine_tune`. Per-layer rates belong
            to the optimiser here (e.g. `optax.multi_transform`); the minibatch rescaling
            applies to the data term only.
    """
    v0 = validate_head(problem, v0)
    if method not in METHODS:
        raise ValueError(f"method={method!r} must be one of {METHODS}")
    check_int_range("num_steps", num_steps, 1)
    check_int_range("save_every", save_every, 1, num_steps)
    if num_steps % save_every:
        raise ValueError(f"num_steps={num_steps} must be a multiple of save_every={save_every}")
    if batch_size is not None:
        check_int_range("batch_size", batch_size, 1, problem.n)
        if key is None:
            raise ValueError("batch_size needs a key for sampling minibatches")
    flow = make_flow(activation=activation, loss=loss, regularizer=regularizer)
    traj = _train(problem, v0, optimizer, num_steps, method, save_every, batch_size, key, flow)
    if check and not isinstance(traj.status, jax.core.Tracer) and traj.status.ndim == 0 and not bool(traj.ok):
        raise SolveError(
            f"{method.upper()} training diverged at step {int(traj.diverged_at)} (non-finite state)"
        )
    return traj


@eqx.filter_jit
def _train(problem, v0, optimizer, num_steps, method, save_every, batch_size, key, flow):
    params = (v0, problem.B0)
    targets = training_targets(problem, flow.loss)
    objective = _objective(flow, problem.B0)
    opt_state = optimizer.init(params)
    n = problem.n
    if key is None:
        key = jax.random.key(0)  # unused: full batch

    def step(carry, index):
        params, opt_state, diverged_at = carry
        if batch_size is None:
            X, y, scale = problem.X, targets, 1.0
        else:
            idx = jax.random.choice(jax.random.fold_in(key, index), n, (batch_size,), replace=False)
            X, y, scale = problem.X[idx], targets[idx], n / batch_size
        grads = jax.grad(objective)(params, X, y, scale)
        if method == "lp":
            grads = (grads[0], jnp.zeros_like(grads[1]))
        updates, new_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        if method == "lp":
            new_params = (new_params[0], problem.B0)
        finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(new_params)]))
        ok = finite & (diverged_at == num_steps)
        params = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_params, params)
        opt_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), new_state, opt_state)
        diverged_at = jnp.where(finite | (diverged_at < num_steps), diverged_at, index)
        return (params, opt_state, diverged_at), None

    def block(carry, start):
        carry, _ = jax.lax.scan(step, carry, start + jnp.arange(save_every))
        return carry, carry[0]

    carry0 = (params, opt_state, jnp.asarray(num_steps))
    (_, _, diverged_at), (vs, Bs) = jax.lax.scan(block, carry0, jnp.arange(0, num_steps, save_every))
    steps = jnp.arange(0, num_steps + 1, save_every)
    v = jnp.concatenate([v0[None], vs])
    B = jnp.concatenate([problem.B0[None], Bs])
    status = jnp.where(diverged_at < num_steps, SolveStatus.DIVERGED, SolveStatus.COMPLETED)
    return DiscreteTrajectory(steps, v, B, status, diverged_at)
