"""A griffe extension that turns the library's reStructuredText-flavoured docstrings into the
Markdown that mkdocstrings renders, without touching the library.

The docstrings are NumPy style with Sphinx roles (``:math:`...```, ``:func:`...```),
``.. math::`` blocks and, in two module docstrings, RST simple tables. This converts:

* ``:math:`x``` -> ``$x$`` and ``.. math:: ...`` blocks -> ``$$ ... $$`` (rendered by
  pymdownx.arithmatex + MathJax);
* ``:func:`~a.b.c``` and the other Python roles -> `` `c` ``;
* RST simple tables (``====  ====`` borders) -> Markdown tables;
* a paragraph ending in ``::`` (RST literal block) -> ``:``;
* NumPy entries written ``name : description`` in Parameters / Returns / Attributes sections
  -> ``name`` with the text as its description (the library uses the slot after the colon
  for prose, not for a type; types come from the signatures).

Loaded from mkdocs.yml (``extensions: [docs/griffe_rst.py]``, path relative to the
repository root, where mkdocs runs).
"""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:func|class|meth|mod|attr|obj|data|exc|const):`~?([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_BORDER = re.compile(r"^\s*=+(\s+=+)+\s*$")
_SECTIONS = {"parameters", "returns", "attributes", "other parameters", "yields", "raises"}
_ENTRY = re.compile(r"^(?P<indent>\s*)(?P<names>[*A-Za-z_][\w*]*(?:\s*,\s*[*A-Za-z_][\w*]*)*)\s+:\s+(?P<text>\S.*)$")


def inline(text: str) -> str:
    """Inline roles: math to ``$...$``, Python objects to code spans (last dotted part)."""
    text = _MATH_ROLE.sub(lambda m: f"${m.group(1).strip()}$", text)
    return _ROLE.sub(lambda m: "`" + m.group(1).split(".")[-1] + "`", text)


def _table(lines: list[str]) -> list[str]:
    """An RST simple table (first and last lines are borders) as a Markdown table."""
    border = lines[0]
    spans = [(m.start(), m.end()) for m in re.finditer(r"=+", border)]
    indent = border[: len(border) - len(border.lstrip())]

    def cells(line):
        out = []
        for i, (a, _) in enumerate(spans):
            b = spans[i + 1][0] if i + 1 < len(spans) else len(line)
            out.append(inline(line[a:b].strip()).replace("|", "\\|"))
        return out

    rows = [cells(l) for l in lines[1:-1] if l.strip() and not _BORDER.match(l)]
    if not rows:
        return lines
    md = ["", indent + "| " + " | ".join(rows[0]) + " |", indent + "|" + "---|" * len(spans)]
    md += [indent + "| " + " | ".join(r) + " |" for r in rows[1:]]
    return md + [""]


def convert(doc: str) -> str:
    lines = doc.split("\n")
    out: list[str] = []
    i, section, base = 0, None, ""
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        # -- RST simple table: top border, header, border, rows, bottom border ---------------
        if _BORDER.match(line):
            borders, j = [i], i + 1
            while j < len(lines) and len(borders) < 3:
                if _BORDER.match(lines[j]):
                    borders.append(j)
                j += 1
            if len(borders) == 3:
                out += _table(lines[i : borders[2] + 1])
                i = borders[2] + 1
                continue
        # -- .. math:: block ---------------------------------------------------------------
        m = re.match(r"^(\s*)\.\. math::\s*(.*)$", line)
        if m:
            indent, body = m.group(1), [m.group(2)] if m.group(2).strip() else []
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > len(indent)):
                if lines[j].strip():
                    body.append(lines[j].strip())
                elif body:
                    break
                j += 1
            out += ["", indent + "$$", *(indent + b for b in body), indent + "$$", ""]
            i = j
            continue
        # -- NumPy section headers and entries -----------------------------------------------
        if i + 1 < len(lines) and re.match(r"^\s*-{3,}\s*$", lines[i + 1]) and stripped:
            section, base = stripped.lower(), line[: len(line) - len(line.lstrip())]
        elif section in _SECTIONS:
            e = _ENTRY.match(line)
            if e and e.group("indent") == base:
                out.append(f"{e.group('indent')}{e.group('names')}")
                out.append(f"{e.group('indent')}    {inline(e.group('text'))}")
                i += 1
                continue
        line = inline(line)
        if line.rstrip().endswith("::") and not line.strip().startswith(".."):
            line = line.rstrip()[:-1]
        out.append(line)
        i += 1
    return "\n".join(out)


class RstToMarkdown(griffe.Extension):
    """Rewrite every docstring once the object tree is built."""

    def on_object(self, *, obj, loader, **kwargs):  # noqa: ARG002 - griffe's hook signature
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
