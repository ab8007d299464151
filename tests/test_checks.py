"""gaussdiff._checks: the shared input checks name the argument and say what was expected."""

import numpy as np
import pytest

from gaussdiff._checks import check_int


def test_check_int_accepts_integral_values():
    assert check_int(3, "n") == 3 and check_int(3.0, "n") == 3 and check_int(np.int64(4), "n") == 4
    assert check_int(0, "seed", minimum=0) == 0 and check_int(5, "k", minimum=5) == 5


@pytest.mark.parametrize(
    "value,minimum,message",
    [
        (0, 1, "n: expected a positive integer, got 0"),
        (-1, 0, "n: expected a non-negative integer, got -1"),
        (4, 5, "n: expected an integer >= 5, got 4"),
        (2.5, 1, "n: expected a positive integer, got 2.5"),
        (True, 1, "n: expected a positive integer, got True"),
        ("x", 1, "n: expected a positive integer, got 'x'"),
        (float("inf"), 1, "n: expected a positive integer, got inf"),
        (None, 1, "n: expected a positive integer, got None"),
    ],
)
def test_check_int_refuses_with_the_argument_named(value, minimum, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        check_int(value, "n", minimum=minimum)


def test_public_surface_is_explicit_and_complete():
    """``gaussdiff/__init__.py`` imports every public name of its modules by name (no star
    import), and ``gd.__all__`` is exactly their ``__all__`` lists, in order, without repeats: a
    name added to a module's ``__all__`` but not to the package face fails here."""
    import ast
    import importlib
    from pathlib import Path

    import gaussdiff as gd

    src = Path(gd.__file__).read_text()
    tree = ast.parse(src)
    imported, modules = [], []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module != "_version":
            assert all(a.name != "*" for a in node.names), f"star import from .{node.module}"
            modules.append(node.module)
            imported += [a.name for a in node.names]
    expected = [n for m in modules for n in importlib.import_module(f"gaussdiff.{m}").__all__]
    assert imported == expected == list(gd.__all__)
    assert len(set(gd.__all__)) == len(gd.__all__)
    assert all(hasattr(gd, n) for n in gd.__all__)
