"""The objective a flow descends: a data-fit loss on the training set plus regularisers.

    objective(v, B) = Σᵢ ℓ(f(xᵢ), yᵢ) + Σ_r R_r(v, B)

Losses (sums over examples, no ½ and no 1/n, as in the paper):
- `SquaredLoss`: `ℓ(f, y) = (f − y)²`, on the targets `y`;
- `LogisticLoss`: `ℓ(f, y) = log(1 + exp(−y f))`, on the labels `sign(v⋆ᵀ σ⋆(B⋆ xᵢ))`.

Regularisers, added exactly as written (no ½):
- `WeightDecay(μ, on="B")`: `μ‖B‖²_F`; `on="both"` adds `μ‖v‖²`;
- `L2SP(λ)`: `λ‖B − B0‖²_F` (pull towards the pretrained features).

Each regulariser is separable over S and S⊥ (`‖B‖² = ‖BE‖² + ‖B P_{S⊥}‖²`), so the same
penalty applies to `Z = B E` in reduced coordinates, and the S⊥ part of B obeys its own linear
ODE (`perp_pull`).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._validation import check_real_range, is_concrete


class Loss(eqx.Module):
    """A data-fit loss `Σᵢ ℓ(fᵢ, yᵢ)`: subclass with `name`, `__call__(f, y)` and `targets`.

    A new loss is one subclass passed as `loss=` (any instance is accepted); only the squared
    loss gets the `O(k m)` Gram form of reduced coordinates and LP's closed form."""

    name = "custom"

    def __call__(self, f, y) -> Array:
        raise NotImplementedError

    def targets(self, problem) -> Array:
        """What the loss fits on the training inputs (default: the targets `y`)."""
        return problem.y


class SquaredLoss(Loss):
    """`Σᵢ (fᵢ − yᵢ)²`, the paper's training loss."""

    name = "squared"

    def __call__(self, f, y) -> Array:
        r = f - y
        return jnp.sum(r * r)


class LogisticLoss(Loss):
    """`Σᵢ log(1 + exp(−yᵢ fᵢ))` on labels `yᵢ = sign(f⋆(xᵢ))` (computed stably as softplus).

    With a ReLU teacher `f⋆(x) = 0` when all its units are off (probability `2^{−k}` per input);
    such an input gets the label 0, contributing the constant `log 2` and no gradient."""

    name = "logistic"

    def __call__(self, f, y) -> Array:
        return jnp.sum(jax.nn.softplus(-y * f))

    def targets(self, problem) -> Array:
        return jnp.sign(problem.teacher_outputs(problem.X))


LOSSES = {"squared": SquaredLoss(), "logistic": LogisticLoss()}


def make_loss(loss) -> Loss:
    """A `Loss` instance, or the name of one in `LOSSES`."""
    if isinstance(loss, Loss):
        return loss
    if not isinstance(loss, str) or loss not in LOSSES:
        raise ValueError(f"loss={loss!r} is unknown; choose one of {tuple(LOSSES)} or pass a Loss instance")
    return LOSSES[loss]


def is_squared(loss) -> bool:
    """Exactly the paper's squared loss (a subclass may compute something else)."""
    return type(loss) is SquaredLoss


def _check_strength(name, value):
    if is_concrete(value):
        check_real_range(name, value, 0.0)
    return jnp.asarray(value, float)


class Regularizer(eqx.Module):
    """A penalty `R(v, W; W0)` on the head and first layer, separable over S and S⊥.

    Subclasses give `penalty` and `perp_pull`. `W` is `B` (full coordinates) or `Z = B E`
    (reduced), `W0` its start; the S⊥ part `B P_{S⊥} = s(t) B0 P_{S⊥}` then follows
    `∂t s = −η_B (a s − c)` with `(a, c) = perp_pull()` summed over the regularisers.
    """

    def penalty(self, v, W, W0) -> Array:
        raise NotImplementedError

    def perp_pull(self) -> tuple[Array, Array]:
        raise NotImplementedError

    def head_ridge(self) -> Array:
        """`μ_v` in the penalty's `μ_v ‖v‖²` part (0 if none): LP's limit is then ridge regression."""
        return jnp.asarray(0.0)

    @property
    def penalises_head(self) -> bool:
        """Static: whether the penalty has a `‖v‖²` part."""
        return False

    @property
    def moves_perp(self) -> bool:
        """Static: whether the S⊥ part of B leaves `B0 P_{S⊥}` (its pull is not towards `s = 1`)."""
        return True


class WeightDecay(Regularizer):
    """`μ‖B‖²_F` (`on="B"`), plus `μ‖v‖²` with `on="both"`.

    On S⊥ it shrinks the features: `B(t) x = e^{−2 η_B μ t} B0 x` for `x ∈ S⊥`.
    """

    mu: Array
    on: str = eqx.field(static=True)

    def __init__(self, mu, on: str = "B"):
        if on not in ("B", "both"):
            raise ValueError(f"WeightDecay(on={on!r}) must be 'B' or 'both'")
        self.mu = _check_strength("mu", mu)
        self.on = on

    def penalty(self, v, W, W0):
        out = self.mu * jnp.sum(W * W)
        return out + self.mu * jnp.dot(v, v) if self.on == "both" else out

    def perp_pull(self):
        return 2.0 * self.mu, jnp.zeros_like(self.mu)

    def head_ridge(self):
        return self.mu if self.on == "both" else jnp.zeros_like(self.mu)

    @property
    def penalises_head(self) -> bool:
        return self.on == "both"


class L2SP(Regularizer):
    """`λ‖B − B0‖²_F` (L2-SP: pull towards the pretrained start). `B − B0` keeps its rows in S,
    so features of inputs in S⊥ stay fixed."""

    lam: Array

    def __init__(self, lam):
        self.lam = _check_strength("lam", lam)

    def penalty(self, v, W, W0):
        D = W - W0
        return self.lam * jnp.sum(D * D)

    def perp_pull(self):
        return 2.0 * self.lam, 2.0 * self.lam

    @property
    def moves_perp(self) -> bool:
        return False


def as_regularizers(regularizer) -> tuple[Regularizer, ...]:
    """`None`, one `Regularizer`, or a sequence of them → a tuple."""
    if regularizer is None:
        return ()
    if isinstance(regularizer, Regularizer):
        return (regularizer,)
    items = tuple(regularizer) if isinstance(regularizer, (list, tuple)) else (regularizer,)
    for r in items:
        if not isinstance(r, Regularizer):
            raise ValueError(
                f"regularizer={regularizer!r} must be None, a Regularizer instance "
                "(e.g. lt.WeightDecay(0.1), lt.L2SP(0.1)) or a list of them"
            )
    return items


def perp_scale(regularizers, eta_B, t) -> Array:
    """`s(t)` with `B(t) P_{S⊥} = s(t) B0 P_{S⊥}`: the solution of `∂t s = −η_B (a s − c)`,
    `s(0) = 1`, i.e. `s = c/a + (1 − c/a) e^{−η_B a t}` (`s ≡ 1` when `a = 0`)."""
    if not regularizers:
        return jnp.ones_like(jnp.asarray(t, float))
    a = sum(r.perp_pull()[0] for r in regularizers)
    c = sum(r.perp_pull()[1] for r in regularizers)
    safe_a = jnp.where(a > 0, a, 1.0)
    limit = jnp.where(a > 0, c / safe_a, 1.0)
    return limit + (1.0 - limit) * jnp.exp(-eta_B * a * t)


def perp_speed(regularizers, eta_B, s) -> Array:
    """`|∂t s| = η_B |a s − c|`, the S⊥ part's speed per unit `‖B0 P_{S⊥}‖_F`."""
    if not regularizers:
        return jnp.zeros_like(s)
    a = sum(r.perp_pull()[0] for r in regularizers)
    c = sum(r.perp_pull()[1] for r in regularizers)
    return eta_B * jnp.abs(a * s - c)


class Objective(eqx.Module):
    """`Σᵢ ℓ(f(xᵢ), yᵢ) + Σ_r R_r`: a loss, a model, and regularisers.

    `data_fit` is given by the coordinates (it knows the training inputs in its basis).
    """

    loss: SquaredLoss | LogisticLoss
    regularizers: tuple

    def __call__(self, data_fit, v, W, W0) -> Array:
        total = data_fit(v, W)
        for r in self.regularizers:
            total = total + r.penalty(v, W, W0)
        return total
