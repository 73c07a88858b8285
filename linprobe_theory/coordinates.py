"""The two coordinate systems a flow can be integrated in.

- `FullCoordinates`: the state is `(v, B)`, `B ∈ R^{k×d}`, exactly as the paper writes the flow.
  The reference, and the only way to *measure* the S⊥ invariance.
- `ReducedCoordinates`: the state is `(v, Z)`, `Z = B E ∈ R^{k×m}`, `E = Q_S U` the basis of S
  made of X's right singular vectors (`reduced.py`). The training loss sees `B` only through
  `X Bᵀ = (X E) Zᵀ` (X's rows lie in S), every gradient row of `B` lies in S, and the
  regularisers are separable over S and S⊥, so the flow of `Z` is closed and
  `B(t) = s(t) B0 + (Z(t) − s(t) Z0) Eᵀ`, with `s ≡ 1` unless a regulariser moves the S⊥ part
  (`objectives.perp_scale`). Exact for every variant in this package: the linear model with the
  squared loss costs `O(k m)` per evaluation (diagonal Gram matrix); activations and the
  logistic loss use `X E` (`n × m`), `O(n k m)`.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from . import reduced as red
from .objectives import Regularizer, is_squared
from .problem import Problem

COORDINATES = ("reduced", "full")


def training_targets(problem: Problem, loss) -> Float[Array, " n"]:
    """What the loss fits: `y` for the squared loss, `sign(teacher(xᵢ))` labels for the logistic."""
    return loss.targets(problem)


def uses_gram_form(model, loss) -> bool:
    """The linear model with the squared loss: reduced coordinates then need only the diagonal
    Gram form (`O(k m)`), not the inputs `X E`."""
    return model.linear and is_squared(loss)


class FitFrame(eqx.Module):
    """Where the linear model's fit lives: `u = Eᵀ Bᵀ v` in the basis `E` of S made of X's right
    singular vectors, its least-squares target `u⋆ = b / λ` and the curvatures `λ`. For the
    squared loss `Xᵀ r = E (λ ⊙ (u − u⋆))`: the fit's gap drives the whole flow
    (`steady_state.FitStop`). `basis=None`: the state is already `Z = B E` (reduced coordinates).
    """

    basis: Float[Array, "d m"] | None
    curvature: Float[Array, " m"]
    u_star: Float[Array, " m"]

    @classmethod
    def of(cls, rp: red.ReducedProblem, basis=None) -> FitFrame:
        seen = rp.curvature > 0  # directions of S the data do not see never move: gap 0 there
        u_star = jnp.where(seen, rp.b / jnp.where(seen, rp.curvature, 1.0), 0.0)
        return cls(basis, rp.curvature, u_star)

    def in_frame(self, W) -> Float[Array, "k m"]:
        """`Z = W E` (`W` itself in reduced coordinates)."""
        return W if self.basis is None else W @ self.basis

    def gap(self, v, W) -> Float[Array, " m"]:
        """`u − u⋆` on the directions the data see."""
        return jnp.where(self.curvature > 0, self.in_frame(W).T @ v - self.u_star, 0.0)

    def move(self, v, W, x, eta_v, eta_B):
        """`(v, W) − P A x`, `A x = (Z x, v xᵀ Eᵀ)`: a step along the directions the flow moves in."""
        dW = jnp.outer(v, x if self.basis is None else self.basis @ x)
        return v - eta_v * (self.in_frame(W) @ x), W - eta_B * dW


class FullCoordinates(eqx.Module):
    """State `(v, B)`; the data term is `Σᵢ ℓ(vᵀ σ(B xᵢ), yᵢ)` on the rows of X. `fit_frame`
    (the linear model's fit, `FitFrame`) serves only the steady-state test, never the flow."""

    X: Float[Array, "n d"]
    targets: Float[Array, " n"]
    W0: Float[Array, "k d"]
    fit_frame: FitFrame | None = None
    name = "full"

    def data_fit(self, model, loss):
        return lambda v, B: loss(model(v, B, self.X), self.targets)

    def features(self, problem: Problem, W, s) -> Float[Array, "... k d"]:
        return W


class ReducedCoordinates(eqx.Module):
    """State `(v, Z)`, `Z = B E`; `inputs = X E` is kept only when the model or loss needs it."""

    rp: red.ReducedProblem
    inputs: Float[Array, "n m"] | None
    targets: Float[Array, " n"] | None
    name = "reduced"

    @property
    def W0(self):
        return self.rp.Z0

    @property
    def fit_frame(self) -> FitFrame:
        return FitFrame.of(self.rp)

    @property
    def perp_norm(self):
        return self.rp.perp_norm

    def data_fit(self, model, loss):
        if uses_gram_form(model, loss):
            # The diagonal Gram form: O(k m), no n- or d-sized array.
            return lambda v, Z: red.gram_train_loss(self.rp, v, Z)
        if self.inputs is None:
            raise ValueError(
                "reduced coordinates without the inputs X E cannot evaluate "
                f"activation={model.activation_name!r} with loss={loss.name!r}; "
                "build them with make_coordinates(problem, flow, 'reduced')"
            )
        return lambda v, Z: loss(model(v, Z, self.inputs), self.targets)

    def features(self, problem: Problem, Z, s) -> Float[Array, "... k d"]:
        """`B = s B0 + (Z − s Z0) Eᵀ` (leading axes of `Z` and `s` broadcast)."""
        s = jnp.asarray(s)[..., None, None]
        return s * problem.B0 + ((Z - s * self.rp.Z0) @ self.rp.rotation.T) @ problem.Q_S.T


def reduced_coordinates(rp: red.ReducedProblem, problem: Problem | None = None, flow=None):
    """Reduced coordinates of `rp`; for a `flow` that needs them (an activation or the logistic
    loss) the inputs `X E` and the loss's targets are formed from `problem` too (`O(n d m)`)."""
    for r in () if flow is None else flow.regularizers:
        if type(r).perp_pull is Regularizer.perp_pull:
            raise ValueError(
                f"regularizer {type(r).__name__} does not say how it moves the S⊥ part of B (perp_pull), "
                "so reduced coordinates cannot represent it; use coordinates='full'"
            )
    needs_inputs = flow is not None and not uses_gram_form(flow.model, flow.loss)
    inputs = targets = None
    if needs_inputs:
        if problem is None:
            raise ValueError(
                f"activation={flow.model.activation_name!r} with loss={flow.loss.name!r} needs the "
                "inputs X E: pass the problem (e.g. fine_tune(problem, ...)), not a ReducedProblem alone"
            )
        inputs = problem.X @ rp.subspace_basis(problem)
        targets = training_targets(problem, flow.loss)
    return ReducedCoordinates(rp, inputs, targets)


def make_coordinates(problem: Problem, flow, coordinates: str):
    """`FullCoordinates` or `ReducedCoordinates` of `problem` for `flow`."""
    if coordinates not in COORDINATES:
        raise ValueError(f"coordinates={coordinates!r} must be one of {COORDINATES}")
    if coordinates == "full":
        frame = None
        if uses_gram_form(flow.model, flow.loss):
            rp = red.ReducedProblem.from_problem(problem)
            frame = FitFrame.of(rp, rp.subspace_basis(problem))
        return FullCoordinates(problem.X, training_targets(problem, flow.loss), problem.B0, frame)
    return reduced_coordinates(red.ReducedProblem.from_problem(problem), problem, flow)
