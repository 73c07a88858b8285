"""The documentation site: every public name in the API reference with a docstring, one math
convention in docstrings, and `mkdocs build --strict` passing with both tutorials executed
(a broken cross-reference, a docstring naming a parameter the signature lacks, an equation that
cannot be converted, or a failing tutorial cell all fail the build)."""

import inspect
import io
import os
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

import linprobe_theory as lt
from linprobe_theory import batch, distributed, progress, storage, sweep

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"
# The sweep layer's public names live in their modules.
OUTER_MODULES = (sweep, storage, batch, distributed, progress)


def public_objects() -> dict[str, object]:
    """`linprobe_theory.X` for every name the package exports, and `module.X` for the public
    functions and classes the sweep layer defines."""
    out = {
        f"linprobe_theory.{name}": getattr(lt, name)
        for name in dir(lt)
        if not name.startswith("_") and not inspect.ismodule(getattr(lt, name))
    }
    for module in OUTER_MODULES:
        for name, obj in vars(module).items():
            if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if obj.__module__ == module.__name__:
                out[f"{module.__name__}.{name}"] = obj
    return out


def documented_objects() -> dict[str, object]:
    out = {}
    for page in sorted(REFERENCE.glob("*.md")):
        for path in re.findall(r"^::: ([\w.]+)\s*$", page.read_text(), flags=re.M):
            module_path, _, name = path.rpartition(".")
            module = sys.modules.get(module_path) or __import__(module_path, fromlist=[name])
            out[path] = getattr(module, name)
    return out


def test_every_public_name_is_in_the_api_reference():
    documented = {id(obj) for obj in documented_objects().values()}
    missing = sorted(path for path, obj in public_objects().items() if id(obj) not in documented)
    assert not missing, f"public names missing from docs/reference/*.md: {missing}"


def test_every_public_name_has_a_docstring():
    undocumented = [
        path
        for path, obj in public_objects().items()
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and not (obj.__doc__ or "").strip()
    ]
    assert not undocumented, f"public names without a docstring: {undocumented}"


def _docstring_tokens(source: str):
    """(prefix, text) of every string token that opens a module, class or function body."""
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    for i, tok in enumerate(tokens):
        if tok.type != tokenize.STRING:
            continue
        before = [t for t in tokens[max(0, i - 6) : i] if t.type not in (tokenize.NL, tokenize.COMMENT)]
        opens_body = i == 0 or (before and before[-1].type in (tokenize.INDENT, tokenize.NEWLINE))
        if opens_body:
            prefix = re.match(r"[a-zA-Z]*", tok.string).group(0)
            yield prefix.lower(), tok.string, tok.start[0]


def test_docstrings_with_latex_are_raw_strings():
    """One convention: LaTeX between `$…$` / `$$…$$`, in raw docstrings, so a backslash in the
    source is the backslash the renderer sees (no doubled `\\\\`)."""
    offenders = []
    for path in sorted((ROOT / "linprobe_theory").glob("*.py")):
        for prefix, text, line in _docstring_tokens(path.read_text()):
            if "$" in text and "\\" in text and "r" not in prefix:
                offenders.append(f"{path.name}:{line}")
    assert not offenders, f"docstrings with LaTeX that are not raw strings: {offenders}"


def _text_outside_code(html: str) -> str:
    html = re.sub(r"<(script|style|pre|code)\b.*?</\1>", "", html, flags=re.S)
    return re.sub(r"<[^>]+>", "", html)


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    env = os.environ | {"NO_MKDOCS_2_WARNING": "1", "LINPROBE_DOCS_EXECUTE": "true", "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-6000:]}"
    return site


def test_site_builds_strict_with_rendered_math_and_executed_tutorials(built_site):
    pages = {p.relative_to(built_site).as_posix(): p.read_text() for p in built_site.rglob("index.html")}
    for name in (
        "reference/bounds/index.html",
        "theory/index.html",
        "tutorials/reproduce_the_paper/index.html",
    ):
        assert "<math" in pages[name], f"no MathML in {name}"
    leftovers = {
        name: re.findall(r"\$\$?[^$\s][^$]{0,60}\$", _text_outside_code(html)) for name, html in pages.items()
    }
    leftovers = {name: found for name, found in leftovers.items() if found}
    assert not leftovers, f"unconverted math: {leftovers}"
    # The reference renders the docstrings' equations, e.g. the FT lower bound's.
    assert "ft_ood_lower_bound" in pages["reference/bounds/index.html"]
    # The tutorials ran: their printed results and figures are in the pages.
    paper = pages["tutorials/reproduce_the_paper/index.html"]
    assert "bound violations: 0" in paper and "data:image/png;base64" in paper
    extend = pages["tutorials/extend_the_theory/index.html"]
    assert "S-perp residual" in extend and "data:image/png;base64" in extend
    # Figures of the studies page are copied from figures/.
    assert (built_site / "figures" / "sweep_alignment.png").exists()
