"""The model: a two-layer network `f(x) = vᵀ σ(B x)`, with `σ` the identity in the paper.

The activation is a field, so a new nonlinearity is a callable, not a new class. The model
maps a head `v`, first-layer weights `W` and inputs to predictions; `W` and the inputs may be
written in any basis of the input space (`B` and `X` in full coordinates, `Z = B E` and `X E` in
the reduced ones), since only `X Bᵀ` enters.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def identity(h):
    """`σ(h) = h`: the two-layer linear model of the paper."""
    return h


def leaky_relu(h):
    """`σ(h) = max(h, 0.01 h)` (`jax.nn.leaky_relu`'s default slope)."""
    return jax.nn.leaky_relu(h)


def gelu(h):
    """`σ(h) = h Φ(h)` in `jax.nn.gelu`'s tanh approximation."""
    return jax.nn.gelu(h)


ACTIVATIONS: dict[str, Callable] = {
    "identity": identity,
    "relu": jax.nn.relu,
    "leaky_relu": leaky_relu,
    "tanh": jnp.tanh,
    "gelu": gelu,
}
"""Activations known by name."""

POSITIVELY_HOMOGENEOUS = ("identity", "relu", "leaky_relu")
"""`σ(c h) = c σ(h)` for `c > 0` (so `σ'(h) h = σ(h)`): per-neuron balancedness holds."""


class TwoLayer(eqx.Module):
    """`f(x) = vᵀ σ(B x)`; for the identity, `f(x) = vᵀ B x = (Bᵀ v)ᵀ x`.

    Attributes:
        activation_name: a key of `ACTIVATIONS`, or the callable's `__name__` for a custom one.
        activation: the elementwise nonlinearity `σ`.
        linear: True only for the named identity (a custom callable takes the general path even
            when it is linear, which makes it a check of that path).
    """

    activation_name: str = eqx.field(static=True)
    activation: Callable = eqx.field(static=True)
    linear: bool = eqx.field(static=True)

    def pre_activations(self, W: Float[Array, "k p"], inputs: Float[Array, "n p"]) -> Float[Array, "n k"]:
        """`H = inputs · Wᵀ`: row i holds `B xᵢ`."""
        return inputs @ W.T

    def __call__(self, v: Float[Array, " k"], W: Float[Array, "k p"], inputs: Float[Array, "n p"]):
        """Predictions `σ(inputs · Wᵀ) v` (for the identity `inputs · (Wᵀ v)`, `O(n p)`)."""
        if self.linear:
            return inputs @ (W.T @ v)
        return self.activation(self.pre_activations(W, inputs)) @ v


def make_model(activation: str | Callable = "identity") -> TwoLayer:
    """The model with activation `activation`: a name in `ACTIVATIONS` or a callable."""
    if isinstance(activation, TwoLayer):
        return activation
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation={activation!r} is unknown; choose one of {tuple(ACTIVATIONS)} or pass a callable"
            )
        return TwoLayer(activation, ACTIVATIONS[activation], activation == "identity")
    if callable(activation):
        return TwoLayer(getattr(activation, "__name__", "custom"), activation, False)
    raise ValueError(f"activation={activation!r} must be one of {tuple(ACTIVATIONS)} or a callable")
