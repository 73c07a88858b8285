"""The batch axis sharded over 4 fake CPU devices gives the same results as one device.

XLA fixes the device count when JAX starts, so the 4-device sweep runs in a subprocess with
`XLA_FLAGS=--xla_force_host_platform_device_count=4` (see `_sweep_worker.py`).
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

WORKER = Path(__file__).with_name("_sweep_worker.py")


def worker_env(**extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", **extra)
    return env


def test_four_devices_match_one_device(tmp_path):
    """compare_methods over 13 runs: 1 device with chunk 5 (13 = 5+5+3) vs 4 devices with chunk 6
    (rounded up to 8; 13 = 8+5, padded) and a stiffness order. Each run's adaptive solve is
    independent of its chunk mates (finished members are frozen under vmap), so the two agree to
    round-off; measured: bit-for-bit. The same with `sharding="shard_map"` (a loop per device)."""
    out = tmp_path / "out.npz"
    env = worker_env(XLA_FLAGS="--xla_force_host_platform_device_count=4")
    res = subprocess.run(
        [sys.executable, str(WORKER), "sharding", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    with np.load(out) as data:
        names = sorted(n.split("/", 1)[1] for n in data.files if n.startswith("one/"))
        assert "ft_ood_final" in names and "lpft_ood_t" in names
        for name in names:
            one = data[f"one/{name}"]
            for other in (data[f"four/{name}"], data[f"mapped/{name}"]):
                assert one.shape == other.shape and one.shape[0] == 13
                if np.issubdtype(one.dtype, np.integer):
                    np.testing.assert_array_equal(one, other, err_msg=name)
                else:
                    np.testing.assert_allclose(other, one, rtol=1e-12, atol=1e-12, err_msg=name)
        assert np.all(data["one/ft_status"] <= 1)


def test_fine_tune_batch_on_two_devices_finishes_and_matches_one(tmp_path):
    """Regression: with two CPU devices each solving half a chunk, the steady-state limit's
    batched LU (`jnp.linalg.solve` under `vmap`) deadlocked in jaxlib 0.10.2's LAPACK batch
    splitting; it now goes through `linalg.solve_linear`, one matrix at a time."""
    results = {}
    for devices in (1, 2):
        out = tmp_path / f"batch{devices}.npz"
        env = worker_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
        res = subprocess.run(
            [sys.executable, str(WORKER), "batch", str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        with np.load(out) as data:
            results[devices] = dict(data)
    assert np.all(results[2]["status"] <= 1)
    np.testing.assert_allclose(results[2]["ood"], results[1]["ood"], rtol=1e-12, atol=1e-15)
