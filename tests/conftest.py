import os

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

torch.set_default_dtype(torch.float32)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Trained feature classifiers are cached under $GAUSSDIFF_CACHE: the tests use a folder of
    their own, never the user's ~/.cache/gaussdiff."""
    old = os.environ.get("GAUSSDIFF_CACHE")
    os.environ["GAUSSDIFF_CACHE"] = str(tmp_path_factory.mktemp("gaussdiff_cache"))
    yield
    if old is None:
        os.environ.pop("GAUSSDIFF_CACHE", None)
    else:
        os.environ["GAUSSDIFF_CACHE"] = old


@pytest.fixture
def rng():
    """A seeded numpy generator (tests never touch a global generator)."""
    return np.random.default_rng(12345)


@pytest.fixture
def gen():
    """A seeded torch CPU generator."""
    return torch.Generator().manual_seed(12345)


SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")


@pytest.fixture
def shared_dir():
    """The developers' ../shared folder; tests using it skip when it is absent."""
    if not os.path.isdir(SHARED):
        pytest.skip("../shared is not available (users of the package do not have it)")
    return SHARED


@pytest.fixture
def one_thread():
    """One torch and one numba thread for the test (restored afterwards): see
    ``_helpers.one_thread_each``."""
    from _helpers import one_thread_each

    with one_thread_each():
        yield


VALIDATION = os.path.join(os.path.dirname(__file__), "..", "validation")


@pytest.fixture
def run_fast_validation():
    """Runs one validation script's ``--fast`` mode into a folder and checks the contract every
    ``result.json`` keeps: the stored status is the returned one, PASS or FAIL, PASS exactly when
    every check passes, a reason for a FAIL, each check with a value and its criterion, and the
    figures on disk. Returns the stored dict."""
    import importlib.util
    import json

    def run(name: str, outdir) -> dict:
        spec = importlib.util.spec_from_file_location(f"_validation_{name}", os.path.join(VALIDATION, f"{name}.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        returned = mod.main(["--outdir", str(outdir), "--fast", "--threads", "1"])
        with open(os.path.join(str(outdir), "result.json")) as f:
            stored = json.load(f)
        assert stored["status"] == returned["status"] and stored["status"] in ("PASS", "FAIL")
        assert stored["mode"] == "fast"
        assert stored["checks"], "a script must record at least one check"
        statuses = [c["status"] for c in stored["checks"]]
        assert set(statuses) <= {"PASS", "FAIL"}
        assert (stored["status"] == "PASS") == all(s == "PASS" for s in statuses)
        if stored["status"] == "FAIL":
            assert stored["reason"], "a FAIL must say why"
        assert stored["figures"]
        for fig in stored["figures"]:
            path = os.path.join(str(outdir), fig)
            assert os.path.exists(path) and os.path.getsize(path) > 0
        for c in stored["checks"]:
            assert c["value"] is not None and c["expected"]
        return stored

    return run
