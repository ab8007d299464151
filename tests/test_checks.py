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


@pytest.mark.parametrize(
    "face", ["gaussdiff", "gaussdiff.data", "gaussdiff.training", "gaussdiff.metrics", "gaussdiff.inverse"]
)
def test_public_surface_is_explicit_and_complete(face):
    """A package face imports every public name of its modules by name (no star import), module by
    module in the order of each module's ``__all__``, and its ``__all__`` is exactly those lists
    summed in the same order (``from . import a, b`` then ``__all__ += a.__all__``), without
    repeats: a name added to a module's ``__all__`` but not to the face fails here."""
    import ast
    import importlib
    from pathlib import Path

    pkg = importlib.import_module(face)
    tree = ast.parse(Path(pkg.__file__).read_text())
    imported, modules, summed = [], [], []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module != "_version":
            assert all(a.name != "*" for a in node.names), f"star import from .{node.module}"
            if node.module is None:  # from . import a, b: the modules whose lists are summed
                summed += [a.name for a in node.names]
            else:
                modules.append(node.module)
                imported += [a.name for a in node.names]
    assert summed == modules
    expected = [n for m in modules for n in importlib.import_module(f"{face}.{m}").__all__]
    assert imported == expected == list(pkg.__all__)
    assert len(set(pkg.__all__)) == len(pkg.__all__)
    assert all(hasattr(pkg, n) for n in pkg.__all__)


def test_cpu_threads_sets_both_and_restores_in_a_fresh_process():
    """In a fresh process numba's threading layer starts inside ``cpu_threads`` and resets the
    OpenMP thread count: torch's setting must still hold in the block (a sweep worker once ran
    at 2 torch threads per core, 4.5x slower), and both come back afterwards."""
    import subprocess
    import sys

    code = (
        "import torch, numba\n"
        "from gaussdiff._threads import cpu_threads\n"
        "before = (torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)\n"
        "with cpu_threads(1, numba=True):\n"
        "    inside = (torch.get_num_threads(), numba.get_num_threads())\n"
        "after = (torch.get_num_threads(), numba.get_num_threads())\n"
        "print(before, inside, after)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    before, inside, after = (tuple(int(v) for v in part.strip(" ()").split(",")) for part in out.strip().split(") ("))
    assert inside == (1, 1)
    assert after == before
