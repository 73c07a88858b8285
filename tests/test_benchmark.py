"""The benchmark scripts run end to end (smoke tests: timings are reported, never asserted).

`bench_sweep.py --quick`: its three FT implementations agree on the final losses to the
integrators' tolerance (rtol 1e-8 each, losses O(1): a real disagreement is ≳ 1e-6). It takes
~80 s on 2 cores, so it is marked slow (the same agreements are tested directly in
test_dynamics.py and test_reduced.py). `bench_gpu.py --quick`: the accelerator benchmark's
one-file script, on 2 fake CPU devices so its multi-device paths run too. `bench_step.py --quick`
(slow): its three forms of a Tsit5 step agree to round-off. `bench_batch.py --quick` (slow): its
three FT paths agree with an accurate reference."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPT = BENCHMARKS / "bench_sweep.py"


def run_quick(script: Path, tmp_path, **env) -> dict:
    """`script --quick --json OUT` on the CPU in a fresh interpreter; its JSON results."""
    out = tmp_path / (script.stem + ".json")
    res = subprocess.run(
        [sys.executable, str(script), "--quick", "--json", str(out)],
        env=dict(os.environ, JAX_PLATFORMS="cpu", OPENBLAS_NUM_THREADS="1", **env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_quick_benchmark_runs_and_its_paths_agree(tmp_path):
    results = run_quick(SCRIPT, tmp_path)
    main = results["main"]
    assert main["a_status_max"] <= 1
    assert main["max_abs_diff_a_b"] < 1e-7 and main["max_abs_diff_a_c"] < 1e-7
    for key in ("a_ms_per_run", "b_ms_per_run", "c_ms_per_run", "c_over_a"):
        assert main[key] > 0
    # The reduced ODE is the same for every d (coverage construction): same step counts.
    steps = [row["steps_mean"] for row in results["per_d"]]
    assert max(steps) - min(steps) <= 0.01 * max(steps)
    assert results["memory"] and all(row["failed"] == 0 for row in results["memory"])


def test_gpu_benchmark_script_runs_quick_on_cpu_devices(tmp_path):
    results = run_quick(
        BENCHMARKS / "bench_gpu.py", tmp_path, XLA_FLAGS="--xla_force_host_platform_device_count=2"
    )
    assert results["local_devices"] == 2
    configs = [(r["devices"], r["sharding"]) for r in results["runs"]]
    assert configs == [(1, "named"), (2, "named"), (2, "shard_map")]
    medians = set()
    for run in results["runs"]:
        for row in run["sizes"]:
            assert row["runs_per_s"] > 0 and row["solved"] == row["runs"], row
            medians.add((row["runs"], row["ood_median"]))
    # The same runs whatever the device set: one OOD median per size.
    assert len(medians) == len({n for n, _ in medians})


@pytest.mark.slow
def test_step_forms_benchmark_runs_and_its_forms_agree(tmp_path):
    """`bench_step.py --quick`: the three forms of a Tsit5 step integrate the same flow (200
    constant steps; the forms differ only in summation order, so to round-off)."""
    results = run_quick(BENCHMARKS / "bench_step.py", tmp_path)
    for row in results["step_forms"]:
        assert row["rank_one_max_abs_diff_Z"] < 1e-12 and row["batch_last_max_abs_diff_Z"] < 1e-12, row
        assert min(row["stages_us"], row["rank_one_us"], row["batch_last_us"], row["fields_only_us"]) > 0
    assert {r["family"] for r in results["chunk_sizes"]} == {"benchmark", "scaled"}
    assert all(r["us_per_lockstep_run_step"] > 0 for r in results["chunk_sizes"])


@pytest.mark.slow
def test_batch_benchmark_runs_quick_and_its_paths_agree(tmp_path):
    """`bench_batch.py --quick`: (A) `fine_tune_batch`, (B) `jit(vmap(fine_tune))` and (C) numpy +
    scipy all end within 1e-7 relative of the rtol-1e-10 reference on both families (each at
    rtol 1e-8: measured ≤ 3.1e-9), and the steady-state stop ends every benchmark-family run."""
    results = run_quick(BENCHMARKS / "bench_batch.py", tmp_path)
    for name, family in results["families"].items():
        worst = max(family[f"{path}_vs_ref_ood_rel"] for path in "abc")
        assert worst < 1e-7, (name, worst)
        assert family["a_status_max"] <= 1 and family["b_status_max"] <= 1, name
        assert min(family["reduction_ms_per_run"].values()) > 0, name
    assert results["families"]["benchmark"]["a_steady_fraction"] == 1.0
