"""Figure helpers (outer layer). Figures are built from tables alone, with matplotlib's
object API on the Agg canvas, so nothing touches pyplot's global state."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

COLORS = {"FT": "#d1495b", "LP": "#00798c", "LP-FT": "#edae49", "bound": "#30343f"}


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 4.0):
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def positive(x, floor: float = 1e-300):
    """Values for a log axis: non-positive entries (exact zeros) become NaN and are not drawn."""
    x = np.asarray(x, dtype=float)
    return np.where(x > floor, x, np.nan)


def median_band(x, y, groups=None):
    """Median and interquartile range of `y` for each distinct `x`."""
    x, y = np.asarray(x), np.asarray(y)
    xs = np.unique(x)
    med = np.array([np.nanmedian(y[x == v]) for v in xs])
    lo = np.array([np.nanpercentile(y[x == v], 25) for v in xs])
    hi = np.array([np.nanpercentile(y[x == v], 75) for v in xs])
    return xs, med, lo, hi


def plot_medians(ax, table, x: str, rows, curves, **kwargs) -> None:
    """For each `(label, column, style, color)` in `curves`: the median of `table[column]` over
    the selected `rows` at each distinct value of `table[x]`, drawn as one line (non-positive
    medians left out, for log axes)."""
    xs = np.unique(table[x][rows])
    for label, column, style, color in curves:
        med = [np.median(table[column][rows & (table[x] == value)]) for value in xs]
        ax.plot(xs, positive(med), style, color=color, label=label, **kwargs)
