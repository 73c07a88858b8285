"""Command-line plumbing shared by the scripts in `experiments/` (outer layer).

A study is a frozen config dataclass (subclassing `study_tools.CommonConfig`) plus three
functions: `compute(config, store, progress)` returning a table (dict of equal-length columns),
`plot(table, config) -> Figure`, and `summarise(table, config) -> str`. `main` turns that into a
CLI with `--quick`, `--out`, `--seed`, `--plot-only`, `--resume`, writing `<name>.csv`,
`<name>.json` (config, versions, git commit), and the figure as PNG and PDF.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .distributed import initialize, open_store
from .progress import LazyProgress
from .storage import fingerprint, read_csv, write_csv, write_json

PACKAGES = ("jax", "jaxlib", "diffrax", "equinox", "optax", "numpy", "matplotlib", "linprobe-theory")


def field(default, help: str, **kwargs):
    """A dataclass field carrying its `--help` text."""
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default=tuple(default), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str:
    """The commit of the checkout this package runs from (`unknown` for an installed copy)."""
    source = Path(__file__).resolve().parent
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=10,
        )
        commit = res.stdout.strip() or "unknown"
        return commit + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _parse_value(text: str, default):
    if isinstance(default, bool):
        return text.lower() in ("1", "true", "yes")
    if isinstance(default, tuple):
        kind = type(default[0]) if default else float
        return tuple(kind(x) for x in text.split(",") if x.strip())
    if default is None:
        return None if text.lower() == "none" else float(text)
    return type(default)(text)


def build_parser(config_cls, description: str) -> argparse.ArgumentParser:
    # Each config flag's help states its default itself: the argparse default is None (unset, so
    # `--quick`'s values apply), which ArgumentDefaultsHelpFormatter would print as a second one.
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="run the small version (well under a minute)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder for the table, its sidecar and the figure (default: results/<study>[-quick] "
        "under the current directory)",
    )
    parser.add_argument(
        "--figure-dir",
        type=Path,
        default=None,
        help="also write the figure here (default: nowhere else); `--figure-dir figures` from the "
        "repository root refreshes the committed figures",
    )
    parser.add_argument("--plot-only", action="store_true", help="re-plot from an existing <out>/<study>.csv")
    parser.add_argument(
        "--resume", action="store_true", help="keep finished chunks in <out>/chunks and skip them"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    group = parser.add_argument_group(
        "several processes (jax.distributed; run the same command once per process, with --out on a "
        "file system all of them see)"
    )
    group.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process run found by cluster auto-detection (e.g. inside a Slurm allocation)",
    )
    group.add_argument("--coordinator", default=None, metavar="HOST:PORT", help="address of process 0")
    group.add_argument("--num-processes", type=int, default=None, metavar="N", help="number of processes")
    group.add_argument("--process-id", type=int, default=None, metavar="I", help="this process, in [0, N)")
    for f in dataclasses.fields(config_cls):
        default = f.default
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            metavar=type(default).__name__.upper(),
            help=f"{f.metadata.get('help', '')} (default: {shown})",
        )
    return parser


@dataclasses.dataclass(frozen=True)
class Study:
    """A study: its name, config class (with a `quick()` classmethod), and three functions."""

    name: str
    description: str
    config_cls: type
    compute: Callable  # (config, store, progress) -> table
    plot: Callable  # (table, config) -> matplotlib Figure
    summarise: Callable  # (table, config) -> str
    check: Callable | None = None  # (table, config) -> list of failure messages

    def main(self, argv=None) -> int:
        import jax

        jax.config.update("jax_enable_x64", True)
        args = build_parser(self.config_cls, self.description).parse_args(argv)
        if args.distributed or args.coordinator is not None or args.num_processes is not None:
            initialize(args.coordinator, args.num_processes, args.process_id)
        lead = jax.process_index() == 0  # the one process that writes the table and figure
        config = self.config_cls.quick() if args.quick else self.config_cls()
        overrides = {
            f.name: _parse_value(getattr(args, f.name), f.default)
            for f in dataclasses.fields(self.config_cls)
            if getattr(args, f.name) is not None
        }
        config = dataclasses.replace(config, **overrides)
        out = args.out or Path("results") / (self.name + ("-quick" if args.quick else ""))
        out.mkdir(parents=True, exist_ok=True)
        table_path = out / f"{self.name}.csv"
        figure_dir = args.figure_dir

        if args.plot_only:
            if not table_path.exists():
                raise SystemExit(f"--plot-only: no table at {table_path}; run the study first")
            table = read_csv(table_path)
            # The table's own config (from its sidecar), not this command line's: the plot and
            # summary label and group what the table holds.
            config = _recorded_config(out / f"{self.name}.json", self.config_cls) or config
        else:
            started = time.time()
            store = open_store(out / "chunks", fingerprint(dataclasses.asdict(config)), resume=args.resume)
            progress = _progress_bar(args.no_progress or not lead, self.name)
            try:
                table = self.compute(config, store, progress)
            finally:
                if progress is not None:
                    progress.close()
            if not lead:
                print(f"process {jax.process_index()} of {jax.process_count()}: done; process 0 writes {out}")
                return 0
            write_csv(table_path, table)
            write_json(
                out / f"{self.name}.json",
                {
                    "study": self.name,
                    "config": dataclasses.asdict(config),
                    "quick": args.quick,
                    "versions": package_versions(),
                    "git_commit": git_commit(),
                    "wall_seconds": round(time.time() - started, 2),
                    "table": table_path.name,
                },
            )
        fig = self.plot(table, config)
        targets = [out] + ([figure_dir] if figure_dir is not None else [])
        save_figure(fig, [Path(folder) / self.name for folder in targets])
        print(self.summarise(table, config))
        print(
            f"table: {table_path}\nfigure: " + ", ".join(str(Path(f) / (self.name + ".png")) for f in targets)
        )
        failures = self.check(table, config) if self.check is not None else []
        for message in failures:
            print("CHECK FAILED:", message, file=sys.stderr)
        return 1 if failures else 0


def _recorded_config(sidecar: Path, config_cls):
    """The config a table was computed with, from its JSON sidecar (None if there is none)."""
    if not sidecar.exists():
        return None
    recorded = json.loads(sidecar.read_text()).get("config", {})
    names = {f.name for f in dataclasses.fields(config_cls)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items() if k in names}
    return config_cls(**values)


def save_figure(fig, stems: str | os.PathLike | list) -> None:
    """Write `fig` as `<stem>.png` and `<stem>.pdf` for every stem, each format rendered once.

    Rendering once and copying the bytes keeps the copies identical: matplotlib's tight
    bounding box after an earlier draw can differ from the first draw's by a few pixels."""
    stems = [Path(stems)] if isinstance(stems, (str, os.PathLike)) else [Path(s) for s in stems]
    for suffix in (".png", ".pdf"):
        buffer = io.BytesIO()
        metadata = _figure_metadata(suffix)
        fig.savefig(buffer, format=suffix[1:], dpi=150, bbox_inches="tight", metadata=metadata)
        for stem in stems:
            stem.parent.mkdir(parents=True, exist_ok=True)
            stem.with_suffix(suffix).write_bytes(buffer.getvalue())


def _figure_metadata(suffix):
    # Fixed metadata keeps regenerated PDFs byte-stable when the data are unchanged.
    return {"CreationDate": None} if suffix == ".pdf" else {"Software": "linprobe-theory"}


def _progress_bar(disabled: bool, name: str):
    return None if disabled else LazyProgress(name)
