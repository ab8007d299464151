"""mkdocs hooks: the API reference is generated, one page per module, so that a new module of
``gaussdiff`` (or of ``theory``) gets its page without anyone editing the docs.

``on_config`` fills the "API reference" section of the nav; ``on_files`` adds the pages
(``api/<module>.md`` holding ``::: gaussdiff.<module>``), plus an index that lists every module
with the first line of its docstring. Modules are found by listing the package folders (nothing
is imported); private modules (``_name``) are skipped. ``ORDER`` puts the modules in reading
order; any other module follows alphabetically.
"""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
ORDER = [
    "schedules",
    "denoisers",
    "empirical",
    "local",
    "sampling",
    "predictions",
    "data",
    "networks",
    "training",
    "metrics",
    "experiments",
    "plotting",
    "conditional",
    "inverse",
    "adapters",
    "compare",
    "kernels",
    "cli",
]
PACKAGES = {"gaussdiff": "The library", "theory": "Symbolic derivations (sympy), not installed with the package"}
NAV_TITLE = "API reference"


def modules(package: str) -> list[str]:
    found = sorted(m.name for m in pkgutil.iter_modules([str(ROOT / package)]) if not m.name.startswith("_"))
    return [m for m in ORDER if m in found] + [m for m in found if m not in ORDER]


def summary(package: str, module: str) -> str:
    """First line of a module's docstring (a package's ``__init__.py``), read with ast (nothing imported)."""
    path = ROOT / package / module
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    except (OSError, SyntaxError):
        doc = None
    line = (doc or "").strip().split("\n")[0]
    return line.replace("|", "\\|").replace("``", "`")


def _pages():
    for package in PACKAGES:
        yield package, None, f"api/{package}.md"
        for m in modules(package):
            yield package, m, f"api/{package}.{m}.md"


def on_config(config):
    entries = ["api/index.md"]
    for package, module, path in _pages():
        entries.append({package if module is None else f"{package}.{module}": path})
    for item in config.nav or []:
        if isinstance(item, dict) and NAV_TITLE in item:
            item[NAV_TITLE] = entries
    return config


THEORY_INTRO = """# Theory labels

Every closed form gaussdiff computes is derived symbolically (sympy) in the repository's
`theory/` package under a stable label, and the docstring or comment that implements it cites
the label, e.g. `# (G4) exact Gaussian flow`. For a label `X`, `theory.check("X")` returns the
simplified difference between the two sides of the derivation (zero when it holds), and
`theory.check_all()` runs them all. The test suite asserts every check is exactly zero and
compares each formula, evaluated numerically, with the gaussdiff function that implements it,
in float64 (`pytest tests/test_theory.py -s` prints the measured errors).

`theory` is a top-level package of the repository, not installed with `gaussdiff`: run from the
repository root. Its modules are documented in the [API reference](../api/theory.md).

The table below is generated from `theory.LABELS` when the site is built.

| label | result | module | where in gaussdiff |
|---|---|---|---|
"""


def theory_page() -> str:
    import importlib
    import sys

    sys.path.insert(0, str(ROOT))
    try:
        labels = importlib.import_module("theory").LABELS
    finally:
        sys.path.remove(str(ROOT))

    def cell(text):
        return str(text).replace("|", "\\|")

    rows = [f"| ({k}) | {cell(title)} | `theory.{mod}` | {cell(lib)} |" for k, (mod, title, lib) in labels.items()]
    return THEORY_INTRO + "\n".join(rows) + "\n"


def on_files(files, config):
    files.append(File.generated(config, "guide/theory.md", content=theory_page()))
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings. Everything public is also available flat from the package:",
        "`import gaussdiff as gd` then `gd.GaussianDenoiser`, `gd.sample_heun`, `gd.memorization_fraction`, ...",
        "The pages below follow the modules, where each object is defined.",
        "",
    ]
    for package, title in PACKAGES.items():
        lines += [f"## `{package}`: {title.lower()}", "", "| module | what it holds |", "|---|---|"]
        for m in modules(package):
            lines.append(f"| [`{package}.{m}`]({package}.{m}.md) | {summary(package, m)} |")
        lines.append("")
    files.append(File.generated(config, "api/index.md", content="\n".join(lines)))
    for package, module, path in _pages():
        if module is None:
            title, body = package, f"::: {package}\n    options:\n      members: false\n"
            if package == "gaussdiff":
                body = (
                    "::: gaussdiff\n    options:\n      members: false\n\n"
                    "The flat namespace `gaussdiff.*` re-exports the public names (`__all__`) of the "
                    "library modules imported in `gaussdiff/__init__.py`; the modules themselves are "
                    "documented on the pages that follow.\n"
                )
        else:
            title, body = f"{package}.{module}", f"::: {package}.{module}\n"
        files.append(File.generated(config, path, content=f"# `{title}`\n\n{body}"))
    return files
