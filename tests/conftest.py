"""Test configuration: float64 everywhere (theory checks need it) and a reproducible, modest
hypothesis profile (JAX compiles once per shape, so examples are drawn from few shapes).

Profiles: `ci` (default; derandomized, so CI runs the same examples every time) and `thorough`
(`HYPOTHESIS_PROFILE=thorough`, random and 100 examples per test, for local bug hunting).
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA:CPU calls OpenBLAS inside batched kernels; its extra threads oversubscribe the cores
# (see benchmarks/RESULTS.md: 30.6 s vs 0.21 s for one batched problem build at d = 1000).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

jax.config.update("jax_enable_x64", True)

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=15,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    deadline=None,
    max_examples=100,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
