"""One process of a real multi-process sweep, for tests/test_multiprocess.py (not a test module).

    python _mp_worker.py PROCESS_ID NUM_PROCESSES PORT STORE OUT.npz LOG
        [--resume] [--delay SECONDS] [--slow SECONDS] [--stale-after S] [--heartbeat S] [--batch]

Joins `jax.distributed` on 127.0.0.1:PORT, opens the shared ChunkStore at STORE, runs the
10-chunk sweep of `_sweep_worker.cheap_run` and writes its full table to OUT.npz. Every chunk
it computes (not loads) is appended to LOG as it is saved. `--delay` sleeps (before opening the
store and again before the sweep) so the processes start at different times; `--slow` sleeps
after each saved chunk so a parent can kill the process mid-sweep. `--batch` runs
`fine_tune_batch` of `batch_inputs()` (chunks of `BATCH_CHUNK`) instead and writes `batch_table`.
"""

import argparse
import time

import jax  # noqa: E402
import numpy as np  # noqa: E402
from _sweep_worker import cheap_params, cheap_run  # sets JAX_PLATFORMS=cpu and x64 first

from linprobe_theory import distributed  # noqa: E402
from linprobe_theory.storage import ChunkStore  # noqa: E402
from linprobe_theory.sweep import run_batch  # noqa: E402

NUM_RUNS, CHUNK_SIZE = 30, 3  # 10 chunks
BATCH_RUNS, BATCH_CHUNK = 13, 4  # 4 chunks of fine_tune_batch's solves


def batch_inputs():
    """Stacked problems and heads for the `--batch` mode (run i from `fold_in(key(5), i)`)."""
    import linprobe_theory as lt

    spec = lt.ProblemSpec(d=12, k=2, m=4, n=6, eps=0.1)

    def one(i):
        k_problem, k_head = jax.random.split(jax.random.fold_in(jax.random.key(5), i))
        problem = lt.make_problem(spec, key=k_problem)
        return problem, lt.random_head(problem, key=k_head)

    return jax.vmap(one)(np.arange(BATCH_RUNS))


def batch_table(store=None) -> dict:
    import linprobe_theory as lt

    problems, v0s = batch_inputs()
    r = lt.fine_tune_batch(problems, v0s, t_final=5.0, chunk_size=BATCH_CHUNK, store=store)
    return {"v": r.v, "ood": r.ood, "id": r.id, "train": r.train, "status": r.status, "steps": r.num_steps}


def main():
    parser = argparse.ArgumentParser()
    for name in ("process_id", "num_processes", "port"):
        parser.add_argument(name, type=int)
    for name in ("store", "out", "log"):
        parser.add_argument(name)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--stale-after", type=float, default=3.0)
    parser.add_argument("--heartbeat", type=int, default=10)
    parser.add_argument("--batch", action="store_true")
    args = parser.parse_args()

    distributed.initialize(
        f"127.0.0.1:{args.port}", args.num_processes, args.process_id, heartbeat_timeout=args.heartbeat
    )
    assert jax.process_count() == args.num_processes and jax.process_index() == args.process_id
    time.sleep(args.delay)
    store = distributed.open_store(
        args.store, "mp-test-sweep", resume=args.resume, stale_after=args.stale_after
    )
    save = ChunkStore.save

    def save_and_log(self, index, arrays):  # every store of this process, substores included
        save(self, index, arrays)
        with open(args.log, "a") as f:
            f.write(f"{index}\n")
        time.sleep(args.slow)

    ChunkStore.save = save_and_log
    time.sleep(args.delay)
    if args.batch:
        table = batch_table(store)
    else:
        table = run_batch(
            cheap_run, cheap_params(NUM_RUNS), key=jax.random.key(3), chunk_size=CHUNK_SIZE, store=store
        )
    np.savez(args.out, **table)
    print(f"process {args.process_id}: table of {len(next(iter(table.values())))} runs", flush=True)


if __name__ == "__main__":
    main()
