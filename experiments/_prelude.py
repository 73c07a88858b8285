"""Process set-up for the study scripts; each imports this first when run as a program.

OpenBLAS reads `OPENBLAS_NUM_THREADS` once, when numpy/scipy load it, so it must be set before
`import numpy`/`import jax` — and `import linprobe_theory` loads both, so this cannot live in the
package. `python experiments/<study>.py` puts `experiments/` on `sys.path`, which makes this module
importable there. Importers of a script (e.g. tests/test_experiments.py, loading it by file path)
own their process: they skip this import and set the variable themselves (tests/conftest.py).
"""

import os

# Before numpy/jax load OpenBLAS: its threads oversubscribe the cores next to XLA's when batched
# LAPACK calls run inside jit(vmap) (a batched make_problem at d=1000: 30.6 s vs 0.21 s).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
