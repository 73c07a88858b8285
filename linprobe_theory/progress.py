"""A progress bar for sweeps (outer layer)."""

from __future__ import annotations


class LazyProgress:
    """A tqdm bar that appears at the first `reset(total=…)`, so it never prints a total-less
    `0run [00:00, ?run/s]` line before the sweep knows its size. Sweeps call `reset`, `update`
    and `close`, as on a tqdm bar."""

    def __init__(self, name: str, **tqdm_kwargs):
        self.name = name
        self.tqdm_kwargs = dict(unit="run", dynamic_ncols=True) | tqdm_kwargs
        self.bar = None

    def reset(self, total=None):
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=self.name, **self.tqdm_kwargs)
        else:
            self.bar.reset(total=total)

    def update(self, n=1):
        if self.bar is None:
            self.reset()
        self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
