"""`benchmarks/bench_sweep.py --quick` runs end to end (a smoke test: timings are reported, never
asserted) and its three FT implementations agree on the final losses to the integrators'
tolerance (rtol 1e-8 each, losses O(1): a real disagreement is ≳ 1e-6)."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_sweep.py"


def test_quick_benchmark_runs_and_its_paths_agree(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu", OPENBLAS_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads(out.read_text())
    main = results["main"]
    assert main["a_status_max"] <= 1
    assert main["max_abs_diff_a_b"] < 1e-7 and main["max_abs_diff_a_c"] < 1e-7
    for key in ("a_ms_per_run", "b_ms_per_run", "c_ms_per_run", "c_over_a"):
        assert main[key] > 0
    # The reduced ODE is the same for every d (coverage construction): same step counts.
    steps = [row["steps_mean"] for row in results["per_d"]]
    assert max(steps) - min(steps) <= 0.01 * max(steps)
    assert results["memory"] and all(row["failed"] == 0 for row in results["memory"])
