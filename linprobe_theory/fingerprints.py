"""Hashable keys and stable digests of a batch's settings and inputs (pure: no I/O).

`frozen` keys the cache of compiled per-run functions in `batch`; `batch_digest` names the
`ChunkStore` substore of a batch, so a changed horizon, head or problem never reuses stale chunks.
"""

from __future__ import annotations

import hashlib

import jax
import numpy as np


def batch_digest(settings: dict, method: str, params: dict) -> str:
    """A fingerprint of a batch: its method ("ft", "lpft", "lp"), settings and the bytes of every
    input array."""
    # A function (observe) is named by its qualified name, stable across processes.
    named = sorted((n, frozen(v, name_functions=True)) for n, v in settings.items())
    # FT and LP-FT keep the tag they had as a flag (lp_first), so their existing stores resume.
    tag = {"ft": False, "lpft": True}.get(method, method)
    h = hashlib.sha256(repr((tag, named)).encode())
    for name in sorted(params):
        array = np.asarray(params[name])
        h.update(f"{name}{array.dtype}{array.shape}".encode())
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]


def frozen(x, name_functions: bool = False):
    """A hashable fingerprint of a concrete setting (a pytree of numbers, a solver, a function…);
    a function is itself (the cache key) or, with `name_functions`, its qualified name."""
    leaves, structure = jax.tree.flatten(x)

    def leaf_key(leaf):
        if callable(leaf):
            return f"{leaf.__module__}.{leaf.__qualname__}" if name_functions else leaf
        return float(np.asarray(leaf)) if np.ndim(leaf) == 0 else tuple(np.ravel(leaf))

    return structure, tuple(leaf_key(leaf) for leaf in leaves)
