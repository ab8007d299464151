"""Bad input to the numerical entry points (issue 16): closed forms, samplers, schedules, kernels
and the class-conditional / guided denoisers. The metrics, quality scores, predictions and data
functions are in ``tests/test_bad_inputs_metrics.py``.

Every case is answered either by a correct result, checked against a float64 evaluation by an
independent route, or by a ``ValueError`` whose message starts with the name of the argument at
fault (``match="^name:"``). Tiny problems only (d = 3, N <= 12, <= 4 sampler steps but
one 64-step reference run).

Cases per entry point (``pytest --collect-only``; hypothesis tests count as one case each):

=====================================================================  =====
entry point                                                            cases
=====================================================================  =====
Gaussian/Mixture/Empirical (numba, torch): D, score, log_density         296
  same, B = 0 / 1 / 4 against the batch and a float64 reference           36
  same, hypothesis (B 0..5, sigma float or per row, float32/float64)       3
closed-form constructors and ``fit`` (36 refused, 1 promoted)             37
other closed-form methods (jacobian, flow, sample, k-NN, ...)             27
kernels: ``stream_posterior`` (numba, torch), ``prepare_data``            46
kernels: ``nearest_neighbors`` (refused, promoted, empty batch)           21
samplers ``sample_euler/heun/edm_stochastic/euler_ancestral``: refused   111
  same, B = 0 / 1 / 4 and float32 vs float64; hypothesis (B, steps)        5
``solve_flow``, ``seeded_noise``, ``ancestral_step``                      30
schedules: sigma grids, ``Schedule`` classes, conversions                 95
class-conditional / guided denoisers, guided Gaussian flow                31
=====================================================================  =====
total                                                                    738
=====================================================================  =====
"""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gaussdiff as gd
import gaussdiff.kernels as K

D = 3  # event dimension of every tiny model here
F64 = torch.float64


def refused(fn, name: str):
    """``fn()`` raises a ValueError whose message starts with ``name:`` (or ``name `` for the
    two-tensor device/dtype messages)."""
    with pytest.raises(ValueError, match=rf"^{re.escape(name)}[: ]"):
        fn()


@functools.cache
def train() -> torch.Tensor:
    return torch.randn(12, D, dtype=F64, generator=torch.Generator().manual_seed(0))


@functools.cache
def models() -> dict:
    y = train()
    return {
        "gaussian": gd.GaussianDenoiser.fit(y),
        "mixture": gd.GaussianMixtureDenoiser(
            torch.tensor([0.3, 0.7], dtype=F64), y[:2], torch.tensor([0.5, 2.0], dtype=F64), cov_type="isotropic"
        ),
        "empirical-numba": gd.EmpiricalDenoiser(y, backend="numba"),
        "empirical-torch": gd.EmpiricalDenoiser(y, backend="torch"),
    }


def queries(b: int = 4) -> torch.Tensor:
    return torch.randn(b, D, dtype=F64, generator=torch.Generator().manual_seed(1))


def reference(kind: str, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """float64 ``D(x, s)`` by an independent route: a linear solve for the Gaussian, the
    mixture formula (M1)-(M2) written out, brute-force softmax over the training set."""
    y, s = train(), s.to(F64).reshape(-1, 1)
    if x.shape[0] == 0:
        return torch.zeros(0, D, dtype=F64)
    if kind == "gaussian":
        mu, cov = y.mean(0), (y - y.mean(0)).T @ (y - y.mean(0)) / y.shape[0]
        eye = torch.eye(D, dtype=F64)
        return torch.stack(
            [mu + cov @ torch.linalg.solve(cov + s[i, 0] ** 2 * eye, x[i] - mu) for i in range(x.shape[0])]
        ).reshape(x.shape)
    if kind == "mixture":
        w, var = torch.tensor([0.3, 0.7], dtype=F64), torch.tensor([0.5, 2.0], dtype=F64)
        tot = var[None] + s**2  # (B, K)
        d2 = ((x[:, None] - y[None, :2]) ** 2).sum(-1)
        logr = torch.log(w)[None] - 0.5 * d2 / tot - 0.5 * D * torch.log(tot)
        r = torch.softmax(logr, 1)
        post = y[None, :2] + (var[None, :, None] / tot[..., None]) * (x[:, None] - y[None, :2])
        return (r[..., None] * post).sum(1)
    logit = -((x[:, None] - y[None]) ** 2).sum(-1) / (2 * s**2)
    return torch.softmax(logit, 1) @ y


KINDS = ["gaussian", "mixture", "empirical-numba", "empirical-torch"]
METHODS = ["__call__", "score", "log_density"]

# --------------------------------------------------------------------------------------------
# Closed-form queries: x and sigma a user can get wrong. Each entry: (id, x from a good x, sigma, argument)
# --------------------------------------------------------------------------------------------
_META = "meta"
BAD_QUERIES = [
    ("x-float16", lambda x: x.half(), 1.0, "x"),
    ("x-bfloat16", lambda x: x.bfloat16(), 1.0, "x"),
    ("x-float32-to-float64-model", lambda x: x.float(), 1.0, "x"),
    ("x-complex64", lambda x: x.to(torch.complex64), 1.0, "x"),
    ("x-int64", lambda x: x.long(), 1.0, "x"),
    ("x-bool", lambda x: x > 0, 1.0, "x"),
    ("x-numpy", lambda x: x.numpy(), 1.0, "x"),
    ("x-list", lambda x: x.tolist(), 1.0, "x"),
    ("x-1d", lambda x: x[0], 1.0, "x"),
    ("x-3d", lambda x: x[None], 1.0, "x"),
    ("x-wrong-event", lambda x: x[:, :2], 1.0, "x"),
    ("x-nan", lambda x: torch.where(x > 0, torch.nan, x), 1.0, "x"),
    ("x-inf", lambda x: torch.where(x > 0, torch.inf, x), 1.0, "x"),
    ("x-meta-device", lambda x: x.to(_META), 1.0, "x"),
    ("sigma-nan", lambda x: x, float("nan"), "sigma"),
    ("sigma-inf", lambda x: x, float("inf"), "sigma"),
    ("sigma-negative", lambda x: x, -1.0, "sigma"),
    ("sigma-zero", lambda x: x, 0.0, "sigma"),
    ("sigma-wrong-length", lambda x: x, torch.ones(3, dtype=F64), "sigma"),
    ("sigma-2d", lambda x: x, torch.ones(4, 1, dtype=F64), "sigma"),
    ("sigma-str", lambda x: x, "1.0", "sigma"),
    ("sigma-none", lambda x: x, None, "sigma"),
    ("sigma-list", lambda x: x, [1.0] * 4, "sigma"),
    ("sigma-bool", lambda x: x, True, "sigma"),
    ("sigma-bool-tensor", lambda x: x, torch.ones(4, dtype=torch.bool), "sigma"),
    ("sigma-complex", lambda x: x, torch.ones(4, dtype=torch.complex64), "sigma"),
    ("sigma-meta-device", lambda x: x, torch.ones(4, dtype=F64, device=_META), "sigma"),
    ("sigma-nan-in-tensor", lambda x: x, torch.tensor([1.0, float("nan"), 1.0, 1.0], dtype=F64), "sigma"),
    ("sigma-zero-in-tensor", lambda x: x, torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=F64), "sigma"),
    ("sigma-1e-200-underflows", lambda x: x, 1e-200, "sigma"),
]
# the x rows and the basic sigma rows run for D, score and log_density; the remaining sigma
# rows (the same check_sigma_squared call in every method) for D only
_QUERY_CASES = [
    pytest.param(c, m, id=f"{c[0]}-{m}")
    for i, c in enumerate(BAD_QUERIES)
    for m in (METHODS if i < 22 else METHODS[:1])
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case, method", _QUERY_CASES)
def test_closed_form_query_refused(kind, method, case):
    _, make_x, sigma, arg = case
    fn = getattr(models()[kind], method)
    refused(lambda: fn(make_x(queries()), sigma), arg)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("b", [0, 1, 4])
def test_closed_form_small_batches(kind, method, b):
    """B = 0 gives an empty answer of the right shape; B = 1 and B = 4 agree row by row with the
    batch of 4 and, for D, with the float64 reference (1e-10: both float64, the routes differ
    only by rounding)."""
    m = models()[kind]
    x = queries(4)
    full = getattr(m, method)(x, 0.7)
    out = getattr(m, method)(x[:b], 0.7)
    assert out.shape == ((b, D) if method != "log_density" else (b,)) and out.dtype == F64
    torch.testing.assert_close(out, full[:b], rtol=1e-12, atol=1e-12)
    if method == "__call__" and b:
        ref = reference(kind, x[:b], torch.full((b,), 0.7, dtype=F64))
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


_SIGMA = st.floats(1e-2, 1e2)


@pytest.mark.parametrize("kind", ["gaussian", "mixture", "empirical-numba"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(b=st.integers(0, 5), s=_SIGMA, per_row=st.booleans(), seed=st.integers(0, 2**16), f32=st.booleans())
def test_closed_form_batches_and_sigma_hypothesis(kind, b, s, per_row, seed, f32):
    """Any batch size (0..5) and sigma in [1e-2, 1e2], as a float or per row, in float64 or
    float32: D matches the independent float64 reference. float32 tolerance: inputs and
    parameters rounded to float32 (u = 6e-8), amplified by at most |x - y|^2 / sigma^2 ~ 1e3 in
    the softmax weights at sigma = 1e-2: 1e-3 relative to the data scale (|y| ~ 3)."""
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(b, D, dtype=F64, generator=g)
    sig = torch.exp(torch.empty(b, dtype=F64).uniform_(np.log(s) - 1, np.log(s) + 1, generator=g)) if per_row else s
    m = models()[kind]
    s_rows = sig if per_row else torch.full((b,), s, dtype=F64)
    ref = reference(kind, x, s_rows)
    if f32:
        m = m.to(dtype=torch.float32)
        out = m(x.float(), sig.float() if per_row else s).double()
        tol = 1e-3 * 3
    else:
        out, tol = m(x, sig), 1e-9 * 3
    assert out.shape == (b, D)
    torch.testing.assert_close(out, ref, rtol=0, atol=tol)


# --------------------------------------------------------------------------------------------
# Constructors
# --------------------------------------------------------------------------------------------
def _y():
    return train()


def _mix(**kw):
    args = dict(weights=[0.5, 0.5], means=_y()[:2], covs=[1.0, 1.0], cov_type="isotropic")
    args.update(kw)
    w, m, c = args.pop("weights"), args.pop("means"), args.pop("covs")
    return gd.GaussianMixtureDenoiser(w, m, c, **args)


BAD_CONSTRUCTORS = [
    ("gauss-mean-nan", lambda: gd.GaussianDenoiser([0.0, float("nan")], torch.eye(2)), "mean"),
    ("gauss-mean-scalar", lambda: gd.GaussianDenoiser(0.0, 1.0), "mean"),
    ("gauss-mean-empty", lambda: gd.GaussianDenoiser([], []), "mean"),
    ("gauss-mean-complex", lambda: gd.GaussianDenoiser(torch.zeros(2, dtype=torch.complex64), torch.eye(2)), "mean"),
    ("gauss-mean-float16", lambda: gd.GaussianDenoiser(torch.zeros(2, dtype=torch.float16), torch.eye(2)), "mean"),
    ("gauss-mean-bfloat16", lambda: gd.GaussianDenoiser(torch.zeros(2, dtype=torch.bfloat16), torch.eye(2)), "mean"),
    ("gauss-mean-meta", lambda: gd.GaussianDenoiser(torch.zeros(2, device=_META), torch.eye(2)), "mean"),
    ("gauss-cov-meta", lambda: gd.GaussianDenoiser(torch.zeros(2), torch.eye(2, device=_META)), "cov"),
    ("gauss-cov-shape", lambda: gd.GaussianDenoiser([0.0, 0.0], torch.eye(3)), "cov"),
    ("gauss-cov-negative", lambda: gd.GaussianDenoiser([0.0, 0.0], -torch.eye(2)), "cov"),
    ("gauss-cov-asymmetric", lambda: gd.GaussianDenoiser([0.0, 0.0], torch.tensor([[1.0, 0.5], [0.0, 1.0]])), "cov"),
    ("gauss-cov-inf", lambda: gd.GaussianDenoiser([0.0, 0.0], torch.eye(2) * torch.inf), "cov"),
    ("fit-0-rows", lambda: gd.GaussianDenoiser.fit(_y()[:0]), "data"),
    ("fit-1-row-unbiased", lambda: gd.GaussianDenoiser.fit(_y()[:1], unbiased=True), "data"),
    ("fit-1d", lambda: gd.GaussianDenoiser.fit(_y()[0]), "data"),
    ("fit-float16", lambda: gd.GaussianDenoiser.fit(_y().half()), "data"),
    ("fit-bfloat16", lambda: gd.GaussianDenoiser.fit(_y().bfloat16()), "data"),
    ("fit-complex", lambda: gd.GaussianDenoiser.fit(_y().to(torch.complex64)), "data"),
    ("fit-nan", lambda: gd.GaussianDenoiser.fit(_y() * torch.nan), "data"),
    ("fit-meta", lambda: gd.GaussianDenoiser.fit(_y().to(_META)), "data"),
    ("emp-float16", lambda: gd.EmpiricalDenoiser(_y().half()), "data"),
    ("emp-0-rows", lambda: gd.EmpiricalDenoiser(_y()[:0]), "data"),
    ("emp-0-cols", lambda: gd.EmpiricalDenoiser(_y()[:, :0]), "data"),
    ("emp-inf", lambda: gd.EmpiricalDenoiser(_y() * torch.inf), "data"),
    ("emp-backend", lambda: gd.EmpiricalDenoiser(_y(), backend="cuda"), "backend"),
    ("emp-chunk-0", lambda: gd.EmpiricalDenoiser(_y(), chunk_size=0), "chunk_size"),
    ("emp-candidates-2.5", lambda: gd.EmpiricalDenoiser(_y(), n_candidates=2.5), "n_candidates"),
    ("emp-rtol-nan", lambda: gd.EmpiricalDenoiser(_y(), rtol=float("nan")), "rtol"),
    ("emp-rtol-bool", lambda: gd.EmpiricalDenoiser(_y(), rtol=True), "rtol"),
    ("mix-weights-negative", lambda: _mix(weights=[1.5, -0.5]), "weights"),
    ("mix-weights-sum", lambda: _mix(weights=[0.3, 0.3]), "weights"),
    ("mix-weights-length", lambda: _mix(weights=[1.0]), "weights"),
    ("mix-cov-type", lambda: _mix(cov_type="iso"), "cov_type"),
    ("mix-variance-negative", lambda: _mix(covs=[-1.0, 1.0]), "covs"),
    ("mix-chunk-0", lambda: _mix(chunk_size=0), "chunk_size"),
    ("mix-means-float16", lambda: _mix(means=_y()[:2].half()), "means"),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in BAD_CONSTRUCTORS])
def test_constructor_refused(case):
    _, fn, arg = case
    refused(fn, arg)


def test_constructor_promotes_integer_and_list_data():
    """Integer, bool and list data are promoted to float64 (the documented rule of as_tensor):
    the result equals the float64 fit exactly."""
    y = torch.tensor([[0, 1, 2], [2, 0, 1], [1, 1, 0], [3, 0, 0]])
    ref = gd.GaussianDenoiser.fit(y.to(F64))
    for data in (y, y.tolist(), y.numpy()):
        g = gd.GaussianDenoiser.fit(data)
        assert g.dtype == F64 and torch.equal(g.cov, ref.cov)
    e = gd.EmpiricalDenoiser(y.tolist())
    x = queries(2)
    assert torch.equal(e(x, 0.5), gd.EmpiricalDenoiser(y.to(F64))(x, 0.5))
    assert gd.EmpiricalDenoiser(y, rtol=np.float32(1e-3)).rtol == float(np.float32(1e-3))  # a numpy scalar


# --------------------------------------------------------------------------------------------
# Other closed-form methods
# --------------------------------------------------------------------------------------------
def _g():
    return models()["gaussian"]


def _e():
    return models()["empirical-numba"]


BAD_METHOD_CALLS = [
    ("effective_dim-negative", lambda: _g().effective_dim(-1.0), "sigma"),
    ("effective_dim-nan", lambda: _g().effective_dim(float("nan")), "sigma"),
    ("effective_dim-str", lambda: _g().effective_dim("a"), "sigma"),
    ("effective_dim-none", lambda: _g().effective_dim(None), "sigma"),
    ("effective_dim-bool", lambda: _g().effective_dim(True), "sigma"),
    ("effective_dim-complex", lambda: _g().effective_dim(torch.ones(2, dtype=torch.complex64)), "sigma"),
    ("effective_dim-meta", lambda: _g().effective_dim(torch.ones(2, device=_META)), "sigma"),
    ("jacobian-negative", lambda: _g().jacobian(-1.0), "sigma"),
    ("jacobian-2d", lambda: _g().jacobian(torch.ones(2, 2)), "sigma"),
    ("jacobian-bool", lambda: _g().jacobian(True), "sigma"),
    ("flow-sigma_to-negative", lambda: _g().flow(queries(), 1.0, -1.0), "sigma_to"),
    ("flow-sigma_to-nan", lambda: _g().flow(queries(), 1.0, float("nan")), "sigma_to"),
    ("flow-sigma_from-zero", lambda: _g().flow(queries(), 0.0, 0.5), "sigma"),
    ("flow_output_moments-negative", lambda: _g().flow_output_moments(-1.0), "sigma_from"),
    (
        "flow_output_moments-start_mean-length",
        lambda: _g().flow_output_moments(1.0, start_mean=[1.0, 2.0]),
        "start_mean",
    ),
    (
        "flow_output_moments-start_mean-nan",
        lambda: _g().flow_output_moments(1.0, start_mean=[1, 2, np.nan]),
        "start_mean",
    ),
    ("sample-0", lambda: _g().sample(0), "n"),
    ("sample-2.5", lambda: _g().sample(2.5), "n"),
    ("sample-numpy-generator", lambda: _g().sample(2, generator=np.random.default_rng(0)), "generator"),
    ("sample-int-generator", lambda: _g().sample(2, generator=0), "generator"),
    (
        "mixture-sample-numpy-generator",
        lambda: models()["mixture"].sample(2, generator=np.random.default_rng()),
        "generator",
    ),
    ("random_molrg-r>d", lambda: gd.GaussianMixtureDenoiser.random_molrg(3, 4, 2, generator=torch.Generator()), "r, k"),
    (
        "random_molrg-d-1.5",
        lambda: gd.GaussianMixtureDenoiser.random_molrg(1.5, 1, 2, generator=torch.Generator()),
        "d",
    ),
    ("random_molrg-generator", lambda: gd.GaussianMixtureDenoiser.random_molrg(3, 1, 2, generator=None), "generator"),
    ("nearest_neighbors-k-0", lambda: _e().nearest_neighbors(queries(), 0), "k"),
    ("nearest_neighbors-k-too-large", lambda: _e().nearest_neighbors(queries(), 13), "k"),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in BAD_METHOD_CALLS])
def test_closed_form_method_refused(case):
    _, fn, arg = case
    refused(fn, arg)


def test_closed_form_methods_empty_batch():
    """Every batched method answers B = 0 with an empty tensor of the right shape."""
    x0 = queries(0)
    e, g = _e(), _g()
    assert e.jacobian(x0, 1.0).shape == (0, D, D)
    assert e.posterior_weights(x0, 1.0).shape == (0, 12)
    assert e.effective_count(x0, 1.0).shape == (0,)
    dist, idx = e.nearest_neighbors(x0, 2)
    assert dist.shape == idx.shape == (0, 2) and dist.dtype == F64 and idx.dtype == torch.int64
    assert models()["mixture"].responsibilities(x0, 1.0).shape == (0, 2)
    assert g.flow(x0, 1.0, 0.0).shape == (0, D)
    assert g.jacobian(torch.ones(0, dtype=F64)).shape == (0, D, D)


# --------------------------------------------------------------------------------------------
# Kernels: the public dispatch
# --------------------------------------------------------------------------------------------
@functools.cache
def preps():
    return {b: K.prepare_data(train(), backend=b) for b in ("numba", "torch")}


_S4 = torch.ones(4, dtype=F64)
BAD_STREAM = [
    ("x-float32", lambda x: x.float(), _S4, {}, "x"),
    ("x-float16", lambda x: x.half(), _S4, {}, "x"),
    ("x-bfloat16", lambda x: x.bfloat16(), _S4, {}, "x"),
    ("x-complex", lambda x: x.to(torch.complex64), _S4, {}, "x"),
    ("x-int64", lambda x: x.long(), _S4, {}, "x"),
    ("x-numpy", lambda x: x.numpy(), _S4, {}, "x"),
    ("x-1d", lambda x: x[0], _S4, {}, "x"),
    ("x-wrong-d", lambda x: x[:, :2], _S4, {}, "x"),
    ("x-nan", lambda x: x * torch.nan, _S4, {}, "x"),
    ("x-meta", lambda x: x.to(_META), _S4, {}, "x"),
    ("x-empty", lambda x: x[:0], _S4[:0], {}, "x"),
    ("sigma-negative", lambda x: x, -_S4, {}, "sigma"),
    ("sigma-wrong-length", lambda x: x, _S4[:3], {}, "sigma"),
    ("sigma-bool", lambda x: x, _S4 > 0, {}, "sigma"),
    ("sigma-meta", lambda x: x, _S4.to(_META), {}, "sigma"),
    ("sigma-underflow", lambda x: x, _S4 * 1e-200, {}, "sigma"),
    ("chunk_size-0", lambda x: x, _S4, {"chunk_size": 0}, "chunk_size"),
    ("n_candidates-0", lambda x: x, _S4, {"n_candidates": 0}, "n_candidates"),
    ("rtol-negative", lambda x: x, _S4, {"rtol": -1.0}, "rtol"),
]


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in BAD_STREAM])
def test_stream_posterior_refused(backend, case):
    _, make_x, sigma, kw, arg = case
    refused(lambda: K.stream_posterior(make_x(queries()), preps()[backend], sigma, backend=backend, **kw), arg)


@pytest.mark.parametrize(
    "call, arg",
    [
        pytest.param(lambda: K.stream_posterior(queries(), train(), _S4, backend="numba"), "prep", id="prep-a-tensor"),
        pytest.param(
            lambda: K.stream_posterior(queries(), preps()["numba"], _S4, backend="gpu"), "backend", id="backend"
        ),
        pytest.param(lambda: K.prepare_data(train().tolist()), "data", id="prepare-list"),
        pytest.param(lambda: K.prepare_data(train() * torch.nan), "data", id="prepare-nan"),
        pytest.param(lambda: K.prepare_data(train().half()), "data", id="prepare-float16"),
        pytest.param(lambda: K.prepare_data(train()[0]), "data", id="prepare-1d"),
    ],
)
def test_kernel_setup_refused(call, arg):
    refused(call, arg)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_stream_posterior_float_sigma_and_one_query(backend):
    """A float sigma is a (B,) sigma; B = 1 equals the float64 brute force (1e-12: float64 data,
    exact candidates)."""
    x = queries()
    mean, _, _ = K.stream_posterior(x[:1], preps()[backend], 0.5, backend=backend)
    torch.testing.assert_close(mean, reference("empirical", x[:1], torch.full((1,), 0.5)), rtol=1e-12, atol=1e-12)


BAD_KNN = [
    ("x-complex", lambda: K.nearest_neighbors(queries().to(torch.complex64), train()), "x"),
    ("x-meta", lambda: K.nearest_neighbors(queries().to(_META), train()), "x"),
    ("x-nan", lambda: K.nearest_neighbors(queries() * torch.nan, train()), "x"),
    ("x-1d", lambda: K.nearest_neighbors(queries()[0], train()), "x"),
    ("x-wrong-d", lambda: K.nearest_neighbors(queries()[:, :2], train()), "x"),
    ("data-nan", lambda: K.nearest_neighbors(queries(), train() * torch.nan), "data"),
    ("data-complex", lambda: K.nearest_neighbors(queries(), train().to(torch.complex64)), "data"),
    ("data-meta", lambda: K.nearest_neighbors(queries(), train().to(_META)), "data"),
    ("data-0-rows", lambda: K.nearest_neighbors(queries(), train()[:0]), "data"),
    ("k-0", lambda: K.nearest_neighbors(queries(), train(), 0), "k"),
    ("k-too-large", lambda: K.nearest_neighbors(queries(), train(), 13), "k"),
    ("k-1.5", lambda: K.nearest_neighbors(queries(), train(), 1.5), "k"),
    ("k-str", lambda: K.nearest_neighbors(queries(), train(), "a"), "k"),
    ("k-none", lambda: K.nearest_neighbors(queries(), train(), None), "k"),
    ("k-empty-batch", lambda: K.nearest_neighbors(queries(0), train(), 0), "k"),
    ("backend", lambda: K.nearest_neighbors(queries(), train(), backend="gpu"), "backend"),
    ("chunk_size-0", lambda: K.nearest_neighbors(queries(), train(), chunk_size=0), "chunk_size"),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in BAD_KNN])
def test_nearest_neighbors_refused(case):
    _, fn, arg = case
    refused(fn, arg)


@pytest.mark.parametrize(
    "make_x", [lambda x: x.half(), lambda x: x.long(), lambda x: x.tolist()], ids=["f16", "int", "list"]
)
def test_nearest_neighbors_promotes_queries(make_x):
    """float16, integer and list queries are promoted to the data's float64: the neighbours are
    those of a float64 brute force on the promoted values (exact)."""
    x = make_x(3 * queries())
    x64 = torch.as_tensor(np.asarray(x.tolist() if isinstance(x, torch.Tensor) else x), dtype=F64)
    d2 = ((x64[:, None] - train()[None]) ** 2).sum(-1)
    dist, idx = K.nearest_neighbors(x, train(), 2)
    assert torch.equal(idx, torch.argsort(d2, 1)[:, :2])
    torch.testing.assert_close(dist, d2.sort(1).values[:, :2].sqrt(), rtol=1e-12, atol=1e-12)


def test_nearest_neighbors_empty_batch():
    for backend in ("numba", "torch"):
        dist, idx = K.nearest_neighbors(queries(0), train(), 3, backend=backend)
        assert dist.shape == idx.shape == (0, 3) and dist.dtype == F64 and idx.dtype == torch.int64


# --------------------------------------------------------------------------------------------
# Samplers
# --------------------------------------------------------------------------------------------
SAMPLERS = {
    "euler": gd.sample_euler,
    "heun": gd.sample_heun,
    "edm_stochastic": gd.sample_edm_stochastic,
    "euler_ancestral": gd.sample_euler_ancestral,
}


def _grid():
    return gd.karras_sigmas(3, 0.05, 5.0)


def _plain(x, s):  # a denoiser that checks nothing itself: the sampler's own checks must hold
    return 0.5 * x


BAD_SAMPLER_CALLS = [
    ("x-numpy", lambda f: f(_plain, queries().numpy(), _grid()), "x"),
    ("x-list", lambda f: f(_g(), queries().tolist(), _grid()), "x"),
    ("x-int64", lambda f: f(_plain, queries().long(), _grid()), "x"),
    ("x-bool", lambda f: f(_plain, queries() > 0, _grid()), "x"),
    ("x-complex", lambda f: f(_plain, queries().to(torch.complex64), _grid()), "x"),
    ("x-nan", lambda f: f(_plain, queries() * torch.nan, _grid()), "x"),
    ("x-scalar", lambda f: f(_plain, torch.tensor(1.0), _grid()), "x"),
    ("x-meta", lambda f: f(_plain, queries().to(_META), _grid()), "x"),
    ("x-float16-to-float64-model", lambda f: f(_g(), queries().half(), _grid()), "x"),
    ("x-wrong-event", lambda f: f(_g(), queries()[:, :2], _grid()), "x"),
    ("sigmas-increasing", lambda f: f(_plain, queries(), _grid().flip(0)), "sigmas"),
    ("sigmas-one-level", lambda f: f(_plain, queries(), _grid()[:1]), "sigmas"),
    ("sigmas-nan", lambda f: f(_plain, queries(), _grid() * torch.nan), "sigmas"),
    ("sigmas-negative", lambda f: f(_plain, queries(), -_grid()), "sigmas"),
    ("sigmas-2d", lambda f: f(_plain, queries(), _grid()[None]), "sigmas"),
    ("sigmas-bool", lambda f: f(_plain, queries(), torch.tensor([True, False])), "sigmas"),
    ("sigmas-bool-list", lambda f: f(_plain, queries(), [True, False]), "sigmas"),
    ("sigmas-complex", lambda f: f(_plain, queries(), _grid().to(torch.complex64)), "sigmas"),
    ("sigmas-meta", lambda f: f(_plain, queries(), _grid().to(_META)), "sigmas"),
    ("sigmas-none", lambda f: f(_plain, queries(), None), "sigmas"),
    ("denoiser-none", lambda f: f(None, queries(), _grid()), "denoiser"),
    ("callback-int", lambda f: f(_plain, queries(), _grid(), callback=3), "callback"),
]
STOCHASTIC_BAD = [
    ("seed-1.5", dict(seed=1.5), "seed"),
    ("seed-str", dict(seed="a"), "seed"),
    ("seed-generator", dict(seed=torch.Generator()), "seed"),
    ("seed-none", dict(seed=None), "seed"),
    ("start-negative", dict(start=-1), "start"),
    ("start-1.5", dict(start=1.5), "start"),
]


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in BAD_SAMPLER_CALLS])
def test_sampler_refused(name, case):
    _, call, arg = case
    refused(lambda: call(SAMPLERS[name]), arg)


@pytest.mark.parametrize("name", ["edm_stochastic", "euler_ancestral"])
@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in STOCHASTIC_BAD])
def test_stochastic_sampler_counters_refused(name, case):
    _, kw, arg = case
    refused(lambda: SAMPLERS[name](_plain, queries(), _grid(), **kw), arg)


@pytest.mark.parametrize(
    "call, arg",
    [
        pytest.param(lambda: gd.sample_euler_ancestral(_plain, queries(), _grid(), eta=-1), "eta", id="eta-negative"),
        pytest.param(lambda: gd.sample_edm_stochastic(_plain, queries(), _grid(), s_churn=-1), "s_churn", id="s_churn"),
        pytest.param(
            lambda: gd.sample_edm_stochastic(_plain, queries(), _grid(), s_noise=np.nan), "s_noise", id="s_noise"
        ),
        pytest.param(lambda: gd.sample_euler(_plain, queries(), schedule=gd.VP()), "schedule", id="schedule-no-ts"),
        pytest.param(lambda: gd.sample_euler(_plain, queries(), ts=[1.0, 0.5]), "schedule", id="ts-no-schedule"),
        pytest.param(
            lambda: gd.sample_heun(_plain, queries(), schedule="vp", ts=[1.0, 0.5]), "schedule", id="schedule-str"
        ),
        pytest.param(
            lambda: gd.sample_heun(_plain, queries(), schedule=gd.VP(), ts=[0.5, 1.0]), "ts", id="ts-increasing"
        ),
        pytest.param(lambda: gd.sample_heun(_plain, queries(), schedule=gd.VP(), ts=[1.0, np.nan]), "ts", id="ts-nan"),
        pytest.param(lambda: gd.sample_heun(_plain, queries(), schedule=gd.VP(), ts=[True, False]), "ts", id="ts-bool"),
        pytest.param(
            lambda: gd.sample_heun(_plain, queries(), schedule=gd.RectifiedFlow(), ts=[1.0, 0.5]),
            "ts",
            id="ts-rf-sigma-inf",
        ),
        pytest.param(
            lambda: gd.sample_euler(_plain, queries(), _grid(), schedule=gd.VP(), ts=[1.0, 0.5]), "sigmas", id="both"
        ),
    ],
)
def test_sampler_options_refused(call, arg):
    refused(call, arg)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_small_batches(name):
    """B = 0 returns an empty batch; B = 1 (with ``start = j`` for the seeded noise) and row j of
    B = 4 agree (1e-12: float64, matmuls of different shapes); a float32
    model agrees with the float64 one to float32 accuracy (1e-4 of the data scale: a few
    rounding errors of 6e-8 per step, three steps, amplified by at most sigma_max / sigma_min)."""
    f, x = SAMPLERS[name], 2 * queries(4)
    full = f(_g(), x, _grid())
    assert f(_g(), x[:0], _grid()).shape == (0, D)
    for j in range(4):  # the stochastic samplers draw row j's noise as row `start + j`
        kw = {} if name in ("euler", "heun") else {"start": j}
        torch.testing.assert_close(f(_g(), x[j : j + 1], _grid(), **kw), full[j : j + 1], rtol=1e-12, atol=1e-12)
    out32 = f(_g().to(dtype=torch.float32), x.float(), _grid()).double()
    torch.testing.assert_close(out32, full, rtol=0, atol=1e-4 * 3)


@settings(max_examples=20, deadline=None)
@given(b=st.integers(0, 4), steps=st.integers(1, 4), smax=st.floats(0.5, 20.0), seed=st.integers(0, 2**16))
def test_heun_exact_on_gaussian_hypothesis(b, steps, smax, seed):
    """Any batch (0..4), number of steps (1..4) and sigma_max in [0.5, 20]: Heun on the Gaussian
    denoiser returns a finite (B, d) batch, and on a fine grid (64 steps) it lands on the exact
    flow (G4) from the same noise. Tolerance 2e-3 max(1, sigma_max): Heun's global error on the
    64-step rho = 7 grid, measured at most 3.4e-4 max(1, sigma_max) over 15 draws, with a
    factor of 6 to spare."""
    g = torch.Generator().manual_seed(seed)
    x = smax * torch.randn(b, D, dtype=F64, generator=g)
    out = gd.sample_heun(_g(), x, gd.karras_sigmas(steps, 0.01, smax))
    assert out.shape == (b, D) and bool(torch.isfinite(out).all())
    fine = gd.sample_heun(_g(), x, gd.karras_sigmas(64, 0.01, smax)[:-1])
    exact = _g().flow(x, smax, 0.01)
    torch.testing.assert_close(fine, exact, rtol=0, atol=2e-3 * max(1.0, smax))


BAD_SOLVE_NOISE_STEP = [
    ("solve_flow-x-numpy", lambda: gd.solve_flow(_g(), queries().numpy(), 5.0, 1.0), "x"),
    ("solve_flow-x-int", lambda: gd.solve_flow(_g(), queries().long(), 5.0, 1.0), "x"),
    ("solve_flow-x-nan", lambda: gd.solve_flow(_plain, queries() * torch.nan, 5.0, 1.0), "x"),
    ("solve_flow-x-meta", lambda: gd.solve_flow(_g(), queries().to(_META), 5.0, 1.0), "x"),
    ("solve_flow-sigma_to-0", lambda: gd.solve_flow(_g(), queries(), 5.0, 0.0), "sigma_to"),
    ("solve_flow-sigma_from-nan", lambda: gd.solve_flow(_g(), queries(), np.nan, 1.0), "sigma_from"),
    ("solve_flow-max_batch-0", lambda: gd.solve_flow(_g(), queries(), 5.0, 1.0, max_batch=0), "max_batch"),
    ("solve_flow-max_batch-1.5", lambda: gd.solve_flow(_g(), queries(), 5.0, 1.0, max_batch=1.5), "max_batch"),
    ("solve_flow-rtol-negative", lambda: gd.solve_flow(_g(), queries(), 5.0, 1.0, rtol=-1), "rtol"),
    ("solve_flow-atol-nan", lambda: gd.solve_flow(_g(), queries(), 5.0, 1.0, atol=np.nan), "atol"),
    ("solve_flow-denoiser", lambda: gd.solve_flow(None, queries(), 5.0, 1.0), "denoiser"),
    ("seeded_noise-n-negative", lambda: gd.seeded_noise(-1, 2), "n"),
    ("seeded_noise-n-1.5", lambda: gd.seeded_noise(1.5, 2), "n"),
    ("seeded_noise-shape-negative", lambda: gd.seeded_noise(2, -1), "event_shape"),
    ("seeded_noise-shape-float", lambda: gd.seeded_noise(2, 1.5), "event_shape"),
    ("seeded_noise-shape-str", lambda: gd.seeded_noise(2, "ab"), "event_shape"),
    ("seeded_noise-seed-str", lambda: gd.seeded_noise(2, 2, seed="a"), "seed"),
    ("seeded_noise-seed-generator", lambda: gd.seeded_noise(2, 2, seed=np.random.default_rng()), "seed"),
    ("seeded_noise-start-negative", lambda: gd.seeded_noise(2, 2, start=-1), "start"),
    ("seeded_noise-dtype-int", lambda: gd.seeded_noise(2, 2, dtype=torch.int64), "dtype"),
    ("seeded_noise-dtype-str", lambda: gd.seeded_noise(2, 2, dtype="float32"), "dtype"),
    ("seeded_noise-device", lambda: gd.seeded_noise(2, 2, device="nosuch"), "device"),
    ("ancestral_step-s_cur-0", lambda: gd.ancestral_step(queries(), queries(), 0.0, 0.0, 1.0, seed=0, step=1), "s_cur"),
    (
        "ancestral_step-s_next-up",
        lambda: gd.ancestral_step(queries(), queries(), 1.0, 2.0, 1.0, seed=0, step=1),
        "s_next",
    ),
    (
        "ancestral_step-s_next-neg",
        lambda: gd.ancestral_step(queries(), queries(), 1.0, -1.0, 1.0, seed=0, step=1),
        "s_next",
    ),
    ("ancestral_step-eta", lambda: gd.ancestral_step(queries(), queries(), 1.0, 0.5, -1.0, seed=0, step=1), "eta"),
    ("ancestral_step-nan", lambda: gd.ancestral_step(queries(), queries(), np.nan, 0.5, 1.0, seed=0, step=1), "s_cur"),
    (
        "ancestral_step-shape",
        lambda: gd.ancestral_step(queries(), queries(2), 1.0, 0.5, 1.0, seed=0, step=1),
        "denoised",
    ),
    ("ancestral_step-step", lambda: gd.ancestral_step(queries(), queries(), 1.0, 0.5, 1.0, seed=0, step=0.5), "step"),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in BAD_SOLVE_NOISE_STEP])
def test_flow_noise_step_refused(case):
    _, fn, arg = case
    refused(fn, arg)


def test_solve_flow_and_noise_small_batches():
    """solve_flow of B = 0 is empty, of B = 1 the exact Gaussian flow (G4) to the solver's
    tolerance (1e-8: rtol 1e-10 over a flow of order 1); seeded_noise of n = 0 is empty and
    row j does not depend on n."""
    x = 3 * queries(4)
    assert gd.solve_flow(_g(), x[:0], 3.0, 0.5).shape == (0, D)
    torch.testing.assert_close(gd.solve_flow(_g(), x[:1], 3.0, 0.5), _g().flow(x[:1], 3.0, 0.5), rtol=0, atol=1e-8)
    assert gd.seeded_noise(0, (2, 2)).shape == (0, 2, 2)
    assert torch.equal(gd.seeded_noise(1, 3, seed=5, start=2), gd.seeded_noise(4, 3, seed=5)[2:3])


# --------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------
GRIDS = {"karras": gd.karras_sigmas, "vp": gd.vp_sigmas, "flow": gd.flow_sigmas}
BAD_GRID_ARGS = [
    ("n-0", (0,), {}, "n"),
    ("n-negative", (-1,), {}, "n"),
    ("n-1.5", (1.5,), {}, "n"),
    ("n-bool", (True,), {}, "n"),
    ("dtype-int", (3,), {"dtype": torch.int64}, "dtype"),
    ("dtype-complex", (3,), {"dtype": torch.complex64}, "dtype"),
    ("dtype-str", (3,), {"dtype": "float32"}, "dtype"),
    ("device-unknown", (3,), {"device": "nosuch"}, "device"),
]


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in BAD_GRID_ARGS])
def test_sigma_grid_refused(grid, case):
    _, args, kw, arg = case
    refused(lambda: GRIDS[grid](*args, **kw), arg)


BAD_SCHEDULE = [
    ("karras-sigma_min-nan", lambda: gd.karras_sigmas(3, np.nan), "sigma_min"),
    ("karras-min>max", lambda: gd.karras_sigmas(3, 10.0, 1.0), "sigma_min"),
    ("karras-sigma_max-inf", lambda: gd.karras_sigmas(3, 0.1, np.inf), "sigma_max"),
    ("karras-rho-0", lambda: gd.karras_sigmas(3, rho=0), "rho"),
    ("karras-float16-overflow", lambda: gd.karras_sigmas(3, 1.0, 1e6, dtype=torch.float16), "sigma_min, sigma_max"),
    ("karras-float16-underflow", lambda: gd.karras_sigmas(3, 1e-9, 1.0, dtype=torch.float16), "sigma_min, sigma_max"),
    ("vp-eps_s-above-1", lambda: gd.vp_sigmas(3, eps_s=2.0), "eps_s"),
    ("vp-beta_min-negative", lambda: gd.vp_sigmas(3, beta_min=-1.0), "beta_min"),
    ("vp-beta_d-nan", lambda: gd.vp_sigmas(3, beta_d=np.nan), "beta_d"),
    ("vp-overflow", lambda: gd.vp_sigmas(3, 0.1, 1e4), "beta_min, beta_d, eps_s"),
    ("flow-sigma_max-0", lambda: gd.flow_sigmas(3, 0.0), "sigma_max"),
    ("EDM-rho-negative", lambda: gd.EDM(rho=-1), "rho"),
    ("VPDiscrete-betas-range", lambda: gd.VPDiscrete(betas=(0.5, 1.5)), "betas"),
    ("VPDiscrete-betas-str", lambda: gd.VPDiscrete(betas="ab"), "betas"),
    ("VPDiscrete-t-nan", lambda: gd.VPDiscrete().sigma(torch.tensor([np.nan])), "t"),
    ("VPDiscrete-too-many-steps", lambda: gd.VPDiscrete(betas=(0.1, 0.2)).time_grid(3), "n"),
    ("time_grid-n-0", lambda: gd.VP().time_grid(0), "n"),
    ("time_grid-min>max", lambda: gd.OU().time_grid(3, sigma_min=10.0, sigma_max=1.0), "sigma_min"),
    ("sigma-of-str", lambda: gd.VP().sigma("a"), "t"),
    ("sigma-of-bool", lambda: gd.EDM().sigma(True), "t"),
    ("append_zero-list", lambda: gd.append_zero([1.0, 2.0]), "x"),
    ("append_zero-2d", lambda: gd.append_zero(torch.ones(2, 2)), "x"),
    ("append_zero-0d", lambda: gd.append_zero(torch.tensor(1.0)), "x"),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in BAD_SCHEDULE])
def test_schedule_refused(case):
    _, fn, arg = case
    refused(fn, arg)


CONVERSIONS = {
    "score_from_denoiser": (gd.score_from_denoiser, "denoised", False),
    "denoiser_from_score": (gd.denoiser_from_score, "score", True),
    "eps_from_denoiser": (gd.eps_from_denoiser, "denoised", False),
    "denoiser_from_eps": (gd.denoiser_from_eps, "eps", True),
    "velocity_from_denoiser": (gd.velocity_from_denoiser, "denoised", False),
    "denoiser_from_velocity": (gd.denoiser_from_velocity, "v", True),
}
BAD_CONVERSION = [
    ("sigma-negative", lambda a, x: (a, x, -1.0), "sigma"),
    ("sigma-nan", lambda a, x: (a, x, np.nan), "sigma"),
    ("sigma-wrong-length", lambda a, x: (a, x, torch.ones(3)), "sigma"),
    ("sigma-str", lambda a, x: (a, x, "a"), "sigma"),
    ("sigma-bool", lambda a, x: (a, x, True), "sigma"),
    ("shape-mismatch", lambda a, x: (a[:2], x, 1.0), None),
    ("numpy", lambda a, x: (a, x.numpy(), 1.0), "x"),
]


@pytest.mark.parametrize("conv", list(CONVERSIONS))
@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in BAD_CONVERSION])
def test_conversion_refused(conv, case):
    fn, first, _ = CONVERSIONS[conv]
    _, make, arg = case
    x = queries()
    refused(lambda: fn(*make(0.5 * x, x)), arg or first)


@pytest.mark.parametrize("conv", list(CONVERSIONS))
def test_conversion_sigma_zero_and_empty(conv):
    """sigma = 0 is refused where the formula divides by sigma and exact (D = x, as
    sigma -> 0) where it does not; B = 0 gives an empty result."""
    fn, _, zero_ok = CONVERSIONS[conv]
    x = queries()
    if zero_ok:
        assert torch.equal(fn(torch.ones_like(x), x, 0.0), x)
    else:
        refused(lambda: fn(0.5 * x, x, 0.0), "sigma")
    assert fn(x[:0], x[:0], torch.ones(0)).shape == (0, D)


# --------------------------------------------------------------------------------------------
# Class-conditional and guided denoisers
# --------------------------------------------------------------------------------------------
@functools.cache
def cond():
    return gd.ClassConditionalDenoiser.from_data(train(), torch.tensor([0, 1, 2] * 4))


def _gc():
    return gd.GaussianDenoiser.fit(train()[::3])


BAD_CONDITIONAL = [
    ("label-out-of-range", lambda: cond()(queries(), 1.0, 3), "label"),
    ("label-negative", lambda: cond()(queries(), 1.0, -1), "label"),
    ("label-1.5", lambda: cond()(queries(), 1.0, 1.5), "label"),
    ("label-str", lambda: cond()(queries(), 1.0, "a"), "label"),
    ("label-bool", lambda: cond()(queries(), 1.0, True), "label"),
    ("label-nan", lambda: cond()(queries(), 1.0, np.nan), "label"),
    ("label-wrong-length", lambda: cond()(queries(), 1.0, torch.tensor([0, 1])), "label"),
    ("label-meta", lambda: cond()(queries(), 1.0, torch.zeros(4, dtype=torch.long, device=_META)), "label"),
    ("sigma-wrong-length", lambda: cond()(queries(), torch.ones(3, dtype=F64), torch.tensor([0, 1, 2, 0])), "sigma"),
    ("x-numpy", lambda: cond()(queries().numpy(), 1.0, 1), "x"),
    ("x-nan", lambda: cond()(queries() * torch.nan, 1.0, 1), "x"),
    ("conditioned-label", lambda: cond().conditioned(5), "label"),
    ("ctor-empty", lambda: gd.ClassConditionalDenoiser([], _g()), "class_denoisers"),
    ("ctor-not-callable", lambda: gd.ClassConditionalDenoiser([1], _g()), "class_denoisers[0]"),
    ("ctor-unconditional-none", lambda: gd.ClassConditionalDenoiser([_g()], None), "unconditional"),
    ("from_data-labels-length", lambda: gd.ClassConditionalDenoiser.from_data(train(), [0, 1]), "labels"),
    ("from_data-labels-2.5", lambda: gd.ClassConditionalDenoiser.from_data(train(), [0.5] * 12), "labels"),
    ("from_data-labels-bool", lambda: gd.ClassConditionalDenoiser.from_data(train(), [True] * 12), "labels"),
    ("from_data-labels-gap", lambda: gd.ClassConditionalDenoiser.from_data(train(), [0, 2] * 6), "labels"),
    ("from_data-kind", lambda: gd.ClassConditionalDenoiser.from_data(train(), [0, 1] * 6, kind="x"), "kind"),
    ("guided-w-nan", lambda: gd.GuidedDenoiser(_g(), _gc(), np.nan), "w"),
    ("guided-w-bool", lambda: gd.GuidedDenoiser(_g(), _gc(), True), "w"),
    ("guided-not-callable", lambda: gd.GuidedDenoiser(3, _gc(), 1.0), "unconditional, conditional"),
    ("cfg-label", lambda: gd.classifier_free_guidance(cond(), 5, 2.0), "label"),
    ("cfg-label-str", lambda: gd.classifier_free_guidance(cond(), "a", 2.0), "label"),
    ("cfg-unconditional-model", lambda: gd.classifier_free_guidance(_g(), 0, 2.0), "model"),
    ("guided_flow-w-nan", lambda: gd.guided_gaussian_flow(_gc(), _g(), np.nan, 1.0), "w"),
    ("guided_flow-sigma_from-0", lambda: gd.guided_gaussian_flow(_gc(), _g(), 2.0, 0.0), "sigma_from"),
    (
        "guided_output-start_mean-nan",
        lambda: gd.guided_gaussian_output(_gc(), _g(), 2.0, 5.0, start_mean=[0, 0, np.nan]),
        "start_mean",
    ),
    (
        "guided_output-start_cov-negative",
        lambda: gd.guided_gaussian_output(_gc(), _g(), 2.0, 5.0, start_cov=-torch.eye(3)),
        "start_cov",
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in BAD_CONDITIONAL])
def test_conditional_refused(case):
    _, fn, arg = case
    refused(fn, arg)


def test_conditional_small_batches():
    """B = 0 and B = 1 with a label: empty, and the class's own float64 denoiser exactly."""
    x = queries()
    assert cond()(x[:0], 1.0, 1).shape == (0, D)
    assert cond()(x[:0], 1.0, torch.zeros(0, dtype=torch.long)).shape == (0, D)
    torch.testing.assert_close(cond()(x[:1], 0.5, 2), cond().class_denoisers[2](x[:1], 0.5), rtol=0, atol=0)


@pytest.mark.parametrize(
    "schedule",
    [
        gd.schedules.EDM(),
        gd.schedules.VP(),
        gd.schedules.OU(),
        gd.schedules.VPDiscrete(),
        gd.schedules.RectifiedFlow(),
    ],
    ids=lambda s: type(s).__name__,
)
def test_schedule_methods_refuse_nan_times(schedule):
    """Every elementwise method of every schedule refuses a NaN time (or sigma) by name, as a
    float and inside a CPU tensor, instead of returning NaN coefficients."""
    for method in ("s", "sigma", "ds", "dsigma", "ode_coefficients"):
        for t in (float("nan"), torch.tensor([0.5, float("nan")], dtype=torch.float64)):
            with pytest.raises(ValueError, match="^t: contains NaN"):
                getattr(schedule, method)(t)
    with pytest.raises(ValueError, match="^sigma: contains NaN"):
        schedule.t_of_sigma(float("nan"))
    assert torch.isfinite(schedule.sigma(torch.tensor([0.5], dtype=torch.float64))).all()
