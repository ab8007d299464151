"""Write docs/cli.md from the command line's own help texts.

    python docs/gen_cli_help.py            # regenerate docs/cli.md
    python docs/gen_cli_help.py --check    # exit 1 if docs/cli.md is stale

The help is rendered in-process from ``gaussdiff.cli.build_parser()`` at a fixed width of 100
columns, so the page is the same on every machine; ``tests/test_docs.py`` fails when the
committed page differs from the current help (then rerun this script).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parent / "cli.md"
WIDTH = "100"

INTRO = """\
# Command line

`gaussdiff <verb> [options]`: each verb is a thin layer over the library and writes its outputs
under one `--outdir`. This page is generated from the help texts themselves
(`python docs/gen_cli_help.py`; a test fails when it is stale), so it is what
`gaussdiff <verb> --help` prints.
"""


def _subcommands(parser: argparse.ArgumentParser) -> dict:
    for action in parser._actions:  # argparse keeps them here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def render() -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH  # argparse reads the width here
    try:
        from gaussdiff.cli import build_parser

        parser = build_parser()
        parts = [INTRO, "## `gaussdiff --help`", "", "```text", parser.format_help().rstrip(), "```", ""]
        for name, sub in _subcommands(parser).items():
            parts += [f"## `gaussdiff {name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
        return "\n".join(parts)
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def main(argv=None) -> int:
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    text = render()
    if check:
        current = PAGE.read_text(encoding="utf-8") if PAGE.exists() else ""
        if current != text:
            print(f"{PAGE} is stale: run python docs/gen_cli_help.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
