"""MkDocs hook: equations become MathML at build time, so the site renders math with no script
and no network (browsers render MathML natively).

Convention, for pages and docstrings alike: `$…$` inline and `$$…$$` displayed, LaTeX inside
(docstrings holding LaTeX are raw strings, `r\"\"\"…\"\"\"`). `pymdownx.arithmatex` (generic mode)
marks the equations in Markdown; the tutorials' Markdown cells come from nbconvert unmarked, so
their `$…$` are found here. A formula that latex2mathml cannot convert fails the build, naming
the page and the formula.
"""

from __future__ import annotations

import html
import re

from latex2mathml.converter import convert
from mkdocs.exceptions import PluginError

_ARITHMATEX = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">\s*'
    r"(?:\\\((?P<inline>.*?)\\\)|\\\[(?P<block>.*?)\\\])"
    r"\s*</(?P=tag)>",
    re.DOTALL,
)
# nbconvert's Markdown cells: the text of each cell is inside this div.
_NOTEBOOK_MARKDOWN = re.compile(
    r'(<div class="jp-RenderedHTMLCommon jp-RenderedMarkdown[^"]*"[^>]*>)(.*?)(</div>)', re.DOTALL
)
_DOLLARS = re.compile(r"\$\$(?P<block>.+?)\$\$|\$(?P<inline>[^\s$](?:[^$]*?[^\s$])?)\$", re.DOTALL)
_CODE = re.compile(r"(<code>.*?</code>|<pre>.*?</pre>)", re.DOTALL)


def _mathml(tex: str, display: bool, where: str) -> str:
    tex = html.unescape(tex).strip()
    try:
        return convert(tex, display="block" if display else "inline")
    except Exception as error:  # latex2mathml raises several exception types
        raise PluginError(f"{where}: cannot convert formula {tex!r} to MathML: {error}") from error


def _convert_dollars(text: str, where: str) -> str:
    parts = _CODE.split(text)
    for i in range(0, len(parts), 2):  # even parts are outside code
        parts[i] = _DOLLARS.sub(
            lambda m: _mathml(
                m["block"] if m["block"] is not None else m["inline"], m["block"] is not None, where
            ),
            parts[i],
        )
    return "".join(parts)


def on_page_content(html_text: str, page, config, files) -> str:
    where = page.file.src_uri
    html_text = _ARITHMATEX.sub(
        lambda m: _mathml(
            m["inline"] if m["inline"] is not None else m["block"], m["block"] is not None, where
        ),
        html_text,
    )
    if where.endswith(".py"):  # a tutorial rendered by mkdocs-jupyter
        html_text = _NOTEBOOK_MARKDOWN.sub(
            lambda m: m[1] + _convert_dollars(m[2], where) + m[3],
            html_text,
        )
    return html_text
