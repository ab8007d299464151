r"""Small sigma-conditioned networks and their three parameterisations, each a denoiser.

Every parameterisation writes the denoiser as an affine function of the raw network output
``F`` (Karras et al. 2022, eq. 7; the one convention of ``docs/guide/convention.md``, theory (C1)-(C4)):

.. math:: D(\hat x, \sigma) = c_{skip}(\sigma)\, \hat x + c_{out}(\sigma)\,
          F\big(c_{in}(\sigma)\, \hat x,\; c_{noise}(\sigma)\big)

=========  =======================  ======================  =========================  ======================
framework  c_skip                   c_out                   c_in                       c_noise
=========  =======================  ======================  =========================  ======================
``edm``    sd^2 / (sigma^2 + sd^2)  sigma sd / sqrt(.)      1 / sqrt(sigma^2 + sd^2)   ln(sigma) / 4
``vp``     1                        -sigma                  s = 1 / sqrt(1 + sigma^2)  t = VP().t_of_sigma
``flow``   1 / (1 + sigma)          -t = -sigma/(1+sigma)   1 / (1 + sigma)            t = sigma / (1 + sigma)
=========  =======================  ======================  =========================  ======================

so ``F`` is EDM's preconditioned output, the VP noise prediction ``eps(s x_hat, t)`` (theory
(C3): ``D = x_hat - sigma eps``) or the rectified-flow velocity ``v(x_t, t)`` with
``x_t = x_hat / (1 + sigma)`` (theory (C4): ``D = x_t - t v``). The one method
:meth:`Preconditioned.scalings` returns the four coefficients; :meth:`Preconditioned.forward`
and the training loss (:meth:`Preconditioned.loss`) both use it, and the loss
target of ``F`` is ``(x0 - c_skip x_hat) / c_out``: ``x0``'s EDM target, the noise ``n`` (VP)
or the velocity ``n - x0`` (flow).

Class-conditional networks (``num_classes=C``) take a label ``F(x, c_noise, label)``: a learned
embedding of ``C + 1`` entries, the last one the "no label" token (index ``C``), added to the
noise embedding (Ho & Salimans 2022; EDM's ``map_label``). Training with label dropout
(:func:`gaussdiff.training.train_denoiser`, ``label_dropout``) teaches the same network the
unconditional denoiser ``D(x, sigma) = F(., ., C)``, so that one network serves classifier-free
guidance (:func:`gaussdiff.classifier_free_guidance`).
"""

from __future__ import annotations

import copy

import math
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._checks import check_batch, check_int, check_labels, check_positive, check_sigma_output, check_sigma_squared
from .denoisers import Denoiser
from .schedules import VP

__all__ = [
    "MLP",
    "UNet",
    "Preconditioned",
    "NetworkDenoiser",
    "build_network",
    "init_weights",
    "FRAMEWORKS",
    "NETS",
    "NORMS",
]

FRAMEWORKS = ("edm", "vp", "flow")
NETS = ("mlp", "unet")
NORMS = ("group", "none")  # the U-Net's normalisation layers


class NoiseEmbedding(nn.Module):
    """``c_noise -> (emb_dim,)``: ``[c, sin(2 pi f_k c), cos(2 pi f_k c)]`` with ``n_freq``
    frequencies ``f_k`` geometric in ``[1/8, 32]`` (resolving both ``ln(sigma)/4`` in about
    ``[-2, 1.5]`` and a time ``t`` in ``[0, 1]``), then a two-layer SiLU MLP."""

    def __init__(self, emb_dim: int, n_freq: int = 16):
        super().__init__()
        self.register_buffer("freqs", 2 * math.pi * torch.logspace(math.log10(1 / 8), math.log10(32), n_freq))
        self.mlp = nn.Sequential(nn.Linear(2 * n_freq + 1, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        arg = c_noise[:, None] * self.freqs[None]
        return self.mlp(torch.cat([c_noise[:, None], torch.sin(arg), torch.cos(arg)], dim=1))


class LabelEmbedding(nn.Module):
    """``label -> (emb_dim,)``: a table of ``num_classes + 1`` learned vectors, the last one
    (index ``num_classes``) the "no label" token of classifier-free guidance."""

    def __init__(self, num_classes: int, emb_dim: int):
        super().__init__()
        self.num_classes = int(num_classes)
        self.table = nn.Embedding(self.num_classes + 1, emb_dim)

    def forward(self, label: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        if label is None:
            label = torch.full((batch,), self.num_classes, dtype=torch.int64, device=device)
        return self.table(label)


def _label_embedding(num_classes, emb_dim):
    if num_classes is None:
        return None
    return LabelEmbedding(check_int(num_classes, "num_classes"), emb_dim)


def _embed(module, c_noise, label):
    """The conditioning vector ``SiLU(E(c_noise) [+ E_label(label)])``, ``(B, emb_dim)``."""
    emb = module.embed(c_noise)
    if module.label_embed is not None:
        emb = emb + module.label_embed(label, c_noise.shape[0], c_noise.device)
    elif label is not None:
        raise ValueError("label: this network is unconditional (built without num_classes)")
    return F.silu(emb)


class MLP(nn.Module):
    """A residual MLP ``F(x, c_noise[, label])`` on ``(B, d)`` vectors (images are flattened).

    ``x -> Linear(d, width)``, then ``depth`` residual blocks
    ``h += W2 SiLU(W1 SiLU(h) + E(c_noise))`` (a per-block projection of the noise embedding,
    plus the label embedding when ``num_classes`` is set), then ``Linear(width, d)``
    initialised to zero (so that at initialisation ``D = c_skip x``).
    """

    def __init__(self, dim: int, width: int = 256, depth: int = 3, num_classes: int | None = None):
        super().__init__()
        dim, width = check_int(dim, "dim"), check_int(width, "width")
        depth = check_int(depth, "depth", minimum=0)
        self.dim, self.width, self.depth = dim, width, depth
        self.embed = NoiseEmbedding(width)
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {"lin1": nn.Linear(width, width), "emb": nn.Linear(width, width), "lin2": nn.Linear(width, width)}
            )
            for _ in range(depth)
        )
        self.out = nn.Linear(width, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        # registered last, so that the seeded initialisation of the other layers is the same
        # with or without labels
        self.label_embed = _label_embedding(num_classes, width)
        self.num_classes = None if self.label_embed is None else self.label_embed.num_classes

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (B, ...), ``c_noise`` (B,), ``label`` None or (B,) integers in ``0..num_classes``
        (``num_classes`` = no label)."""
        shape = x.shape
        x = x.reshape(shape[0], -1)
        emb = _embed(self, c_noise, label)
        h = self.inp(x)
        for b in self.blocks:
            h = h + b["lin2"](F.silu(b["lin1"](F.silu(h)) + b["emb"](emb)))
        return self.out(F.silu(h)).reshape(shape)


def _groups(c: int) -> int:
    return next(g for g in (8, 4, 2, 1) if c % g == 0)


def _norm(kind: str, c: int) -> nn.Module:
    """GroupNorm over ``c`` channels, or nothing (``"none"``: every output pixel then depends on
    its receptive field only, as in the local networks of Kamb & Ganguli)."""
    return nn.GroupNorm(_groups(c), c) if kind == "group" else nn.Identity()


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, norm: str = "group"):
        super().__init__()
        self.norm1 = _norm(norm, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = _norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class UNet(nn.Module):
    """A small U-Net ``F(x, c_noise[, label])`` for ``(B, C, H, W)`` images of 8 to 32 pixels.

    Levels of channels ``width * mult`` (``mult = (1, 2)`` below 16 px, ``(1, 2, 2)`` from 16 px),
    one residual block (GroupNorm, SiLU, 3x3 conv, additive noise embedding) per level on the
    way down and up (``norm="none"``: no normalisation layers, so that no output pixel depends
    on statistics of the whole image), average-pool down, nearest up, skip connections by concatenation, a zero-
    initialised output conv. Sizes not divisible by ``2^(levels-1)`` (e.g. 25 or 28) are padded
    by replication and cropped back. With ``num_classes`` a label embedding is added to the
    noise embedding.
    """

    def __init__(
        self, channels: int, size: int, width: int = 32, num_classes: int | None = None, *, norm: str = "group"
    ):
        super().__init__()
        channels, size, width = check_int(channels, "channels"), check_int(size, "size"), check_int(width, "width")
        if norm not in NORMS:
            raise ValueError(f"norm: must be one of {NORMS}, got {norm!r}")
        self.channels, self.size, self.width, self.norm_kind = channels, size, width, norm
        mults = (1, 2) if size < 16 else (1, 2, 2)
        self.factor = 2 ** (len(mults) - 1)
        emb_dim = 4 * width
        self.embed = NoiseEmbedding(emb_dim)
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        chans = [width * m for m in mults]
        self.down = nn.ModuleList()
        c = width
        for co in chans:
            self.down.append(_ResBlock(c, co, emb_dim, norm))
            c = co
        self.mid = _ResBlock(c, c, emb_dim, norm)
        self.up = nn.ModuleList()
        for co in reversed(chans):
            self.up.append(_ResBlock(c + co, co, emb_dim, norm))
            c = co
        self.norm = _norm(norm, c)
        self.out = nn.Conv2d(c, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.label_embed = _label_embedding(num_classes, emb_dim)  # last: see MLP
        self.num_classes = None if self.label_embed is None else self.label_embed.num_classes

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        H, W = x.shape[-2:]
        ph, pw = (-H) % self.factor, (-W) % self.factor
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        emb = _embed(self, c_noise, label)
        h = self.inp(x)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.down) - 1:
                h = F.avg_pool2d(h, 2)
        h = self.mid(h, emb)
        for i, block in enumerate(self.up):
            s = skips.pop()
            if h.shape[-2:] != s.shape[-2:]:
                h = F.interpolate(h, size=s.shape[-2:], mode="nearest")
            h = block(torch.cat([h, s], dim=1), emb)
        out = self.out(F.silu(self.norm(h)))
        return out[..., :H, :W]


class Preconditioned(nn.Module):
    """A raw network ``F`` turned into a denoiser ``D(x_hat, sigma)`` by one of the three
    parameterisations (table in the module docstring).

    Parameters
    ----------
    net : module ``F(x, c_noise[, label])`` with ``x`` of the event shape and ``c_noise`` ``(B,)``.
    framework : ``"edm"``, ``"vp"`` or ``"flow"``.
    sigma_data : EDM's data standard deviation ``sd`` (used by ``"edm"`` only).
    """

    def __init__(self, net: nn.Module, framework: str = "edm", *, sigma_data: float = 0.5):
        super().__init__()
        if framework not in FRAMEWORKS:
            raise ValueError(f"framework: must be one of {FRAMEWORKS}, got {framework!r}")
        if not isinstance(net, nn.Module):
            raise ValueError(f"net: expected a torch.nn.Module F(x, c_noise), got {type(net).__name__}")
        self.net, self.framework = net, framework
        self.sigma_data = check_positive(sigma_data, "sigma_data")
        self._vp = VP()

    def scalings(self, sigma: torch.Tensor, sigma_data: torch.Tensor | None = None):
        """``(c_skip, c_out, c_in, c_noise)`` for a ``(B,)`` sigma, each ``(B,)`` (elementwise, so
        any shape of sigma works).

        ``sigma_data`` (``"edm"`` only): None for this module's, or a float64 tensor that
        broadcasts against ``sigma`` (an ensemble's per-model values, ``(K, 1)``); it is rounded
        to ``sigma``'s dtype after squaring, exactly as a Python float is."""
        if self.framework == "edm":  # Karras et al. 2022, Table 1 / eq. 7
            if sigma_data is None:
                sd = self.sigma_data
                sd2 = sd**2
            else:
                sd, sd2 = sigma_data.to(sigma.dtype), sigma_data.square().to(sigma.dtype)
            r = torch.rsqrt(sigma**2 + sd2)
            return sd2 * r**2, sigma * sd * r, r, torch.log(sigma) / 4
        if self.framework == "vp":  # (C3) D = x - sigma eps(s x, t)
            return (torch.ones_like(sigma), -sigma, torch.rsqrt(1 + sigma**2), self._vp.t_of_sigma(sigma))
        t = sigma / (1 + sigma)  # (C4) D = x_t - t v(x_t, t), x_t = x / (1 + sigma)
        return 1 / (1 + sigma), -t, 1 / (1 + sigma), t

    @property
    def num_classes(self) -> int | None:
        """Number of classes of a class-conditional network, None for an unconditional one."""
        return getattr(self.net, "num_classes", None)

    def _f(self, x, c_noise, label):
        # unconditional modules keep their two-argument signature
        return self.net(x, c_noise) if label is None else self.net(x, c_noise, label)

    def loss(
        self,
        x0: torch.Tensor,
        sigma: torch.Tensor,
        noise: torch.Tensor,
        label: torch.Tensor | None = None,
        *,
        sigma_data: torch.Tensor | None = None,
        f: Callable | None = None,
    ) -> torch.Tensor:
        r"""The training loss: the mean over the batch and entries of
        :math:`\|F(c_{in} x, c_{noise}) - (x_0 - c_{skip} x)/c_{out}\|^2`, ``x = x0 + sigma noise``
        (Karras et al. 2022, eq. 8 with their weighting: ``lambda(sigma) ||D(x, sigma) - x0||^2``
        with ``lambda = 1 / c_out^2``). The target of ``F`` is ``x0``'s EDM target, the noise
        (VP) or the velocity ``noise - x0`` (flow).

        Parameters
        ----------
        x0, noise : ``(B, *event_shape)``; sigma : ``(B,)``; label : None or ``(B,)`` (see
            :meth:`forward`).
        sigma_data, f : for K models trained as one (:func:`gaussdiff.train_ensemble`): ``x0``,
            ``noise`` ``(K, B, *event_shape)``, ``sigma`` ``(K, B)``, ``sigma_data`` the models'
            values (see :meth:`scalings`) and ``f(x, c_noise)`` their vectorised raw network in
            place of this module's. The result is then ``(K,)``, one loss per model.
        """
        shape = sigma.shape + (1,) * (x0.ndim - sigma.ndim)
        x = x0 + sigma.reshape(shape) * noise
        c_skip, c_out, c_in, c_noise = self.scalings(sigma, sigma_data)
        target = (x0 - c_skip.reshape(shape) * x) / c_out.reshape(shape)
        x_in = c_in.reshape(shape) * x
        out = self._f(x_in, c_noise, label) if f is None else f(x_in, c_noise)
        err = (out - target).square()
        return err.mean() if sigma.ndim == 1 else err.reshape(sigma.shape[0], -1).mean(1)

    def raw(self, x: torch.Tensor, sigma: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """The network output ``F(c_in x, c_noise[, label])``: EDM output, ``eps`` or velocity ``v``."""
        _, _, c_in, c_noise = self.scalings(sigma)
        return self._f(_bcast(c_in, x) * x, c_noise, label)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """``D(x_hat, sigma[, label]) = c_skip x_hat + c_out F(c_in x_hat, c_noise[, label])``;
        sigma ``(B,)``; ``label`` None (unconditional) or ``(B,)`` integers in
        ``0..num_classes`` (``num_classes`` is the "no label" token)."""
        c_skip, c_out, c_in, c_noise = self.scalings(sigma)
        return _bcast(c_skip, x) * x + _bcast(c_out, x) * self._f(_bcast(c_in, x) * x, c_noise, label)


def _bcast(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return c.reshape(-1, *([1] * (x.ndim - 1)))


def init_weights(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-initialise every ``Linear``/``Conv2d`` from ``generator`` with torch's default law
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (weights and biases), and every label ``Embedding``
    with torch's ``N(0, 1)``, keeping the zero-initialised output layers at zero. No global
    generator is touched."""
    zero = {id(m.out) for m in module.modules() if isinstance(m, (MLP, UNet))}
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)) and id(m) not in zero:
                bound = 1.0 / math.sqrt(m.weight[0].numel())
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator) * (2 * bound) - bound)
                if m.bias is not None:
                    m.bias.copy_(torch.rand(m.bias.shape, generator=generator) * (2 * bound) - bound)
            elif isinstance(m, nn.Embedding):
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator))
    return module


def build_network(
    net: str,
    event_shape: Sequence[int],
    *,
    width: int | None = None,
    depth: int | None = None,
    framework: str = "edm",
    sigma_data: float = 0.5,
    seed: int = 0,
    num_classes: int | None = None,
    norm: str = "group",
) -> Preconditioned:
    """A fresh ``Preconditioned`` network (float32, CPU) for data of ``event_shape``, its
    weights drawn from a generator seeded with ``seed`` (see :func:`init_weights`).

    ``net="mlp"`` (any event shape, flattened; default width 256, depth 3) or ``"unet"``
    (images ``(C, H, W)``, meant for 8 to 32 px; default width 32). ``num_classes=C`` makes it
    class-conditional (a label embedding of ``C + 1`` entries, the last one "no label").
    ``norm``: the U-Net's normalisation, ``"group"`` (GroupNorm) or ``"none"``."""
    event_shape = tuple(int(s) for s in event_shape)
    if net not in NETS:
        raise ValueError(f"net: must be one of {NETS}, got {net!r}")
    if width is not None:
        check_int(width, "width")
    if depth is not None:
        check_int(depth, "depth")
    if norm not in NORMS:
        raise ValueError(f"norm: must be one of {NORMS}, got {norm!r}")
    if net == "mlp" and norm != "group":
        raise ValueError(f"norm: {norm!r} is a U-Net option; the MLP has no normalisation to remove")
    if net == "mlp":
        make = lambda: MLP(
            math.prod(event_shape), width=int(width or 256), depth=int(depth or 3), num_classes=num_classes
        )
    else:
        if len(event_shape) != 3:
            raise ValueError(
                f"net: 'unet' needs images (C, H, W), the data have event shape "
                f"{event_shape}; use net='mlp' for vectors"
            )
        if depth is not None:
            raise ValueError("depth: the U-Net's depth follows the image size; leave depth unset")
        make = lambda: UNet(
            event_shape[0], min(event_shape[1:]), width=int(width or 32), num_classes=num_classes, norm=norm
        )
    # torch's layer constructors draw from the global generator; restore it, then draw the
    # weights from our own seeded one.
    with torch.random.fork_rng(devices=[]):
        module = make()
    init_weights(module, torch.Generator().manual_seed(int(seed)))
    return Preconditioned(module, framework, sigma_data=sigma_data)


class NetworkDenoiser(Denoiser):
    """A trained network as a gaussdiff denoiser ``D(x, sigma)``, or ``D(x, sigma, label)`` for a
    class-conditional network.

    Called under ``torch.no_grad`` with the module in eval mode. The network computes in its
    own dtype (float32) on its own device: ``x`` of another floating dtype or on another device
    is moved there and the result moved back (so float64 samplers can call it). At extreme sigma,
    where ``sigma**2`` leaves the network's dtype (outside ``1.1e-19 .. 1.8e19`` in float32), the
    preconditioning and the network run on a float64 copy of the network and the result is
    rounded back (:meth:`_run_network`); nothing returns a silent NaN or inf. For autograd
    (Jacobians, scores) call ``.model(x, sigma)`` directly or use :meth:`jacobian`.

    A class-conditional network (``num_classes`` an int) takes ``label``: an int, a ``(B,)``
    integer tensor with values in ``0..num_classes-1``, or None for the unconditional denoiser
    learned by label dropout. It works with :func:`gaussdiff.classifier_free_guidance`, and
    :meth:`conditioned` fixes a label for the samplers. For an unconditional network
    ``num_classes`` is None and a label is refused.

    Parameters
    ----------
    model : a :class:`Preconditioned` module.
    event_shape : shape of one sample.
    config : the training configuration (stored for reference).
    """

    def __init__(self, model: Preconditioned, event_shape: Sequence[int], *, config: dict | None = None):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.event_shape = tuple(int(s) for s in event_shape)
        p = next(model.parameters())
        self.dtype, self.device = p.dtype, p.device
        self.config = dict(config or {})

    @property
    def framework(self) -> str:
        return self.model.framework

    @property
    def num_classes(self) -> int | None:
        """Classes of a class-conditional network; None when it is unconditional."""
        return self.model.num_classes

    def to(self, *, dtype=None, device=None) -> "NetworkDenoiser":
        """A new denoiser on a copy of the network in ``dtype`` / on ``device``; this one is
        unchanged and keeps working (the module is copied, never moved in place)."""
        model = copy.deepcopy(self.model).to(dtype=dtype or self.dtype, device=device or self.device)
        return NetworkDenoiser(model, self.event_shape, config=self.config)

    def _prepare_any(self, x, sigma):
        """``x`` checked (any floating dtype, any device) and sigma as a ``(B,)`` tensor on the
        network's device: in the network's dtype where ``sigma**2`` is a normal number of it,
        else in float64 (:func:`~gaussdiff._checks.check_sigma_squared`; refused where the
        square is not a normal float64 either)."""
        x = check_batch(x, self.event_shape, "x")
        s = check_sigma_squared(sigma, x.shape[0], dtype=self.dtype, device=self.device)
        return x, s

    def _float64_model(self) -> Preconditioned:
        """The network in float64 (a cached copy; the float32 weights convert exactly)."""
        if self.dtype == torch.float64:
            return self.model
        wide = self.__dict__.get("_float64_copy")
        if wide is None:
            wide = copy.deepcopy(self.model).to(dtype=torch.float64)
            self.__dict__["_float64_copy"] = wide
        return wide

    def _run_network(self, what: str, fn, x, sigma, label, *, shape, grad: bool = False):
        """``fn(model, x, s, label)`` with the preconditioning exact at every sigma, its output
        returned in ``x``'s dtype and device with shape ``shape(B)``.

        Ordinary sigma (``sigma**2`` a normal number of the network's dtype) run the network as
        it is, bit for bit the plain call. Extreme sigma (``1e-40`` or ``1e30`` for a float32
        network, where ``sigma**2`` under- or overflows and the scalings would be 0, inf or
        NaN), or an output that overflowed inside the network's dtype, run once more on the
        float64 copy of the network (:meth:`_float64_model`): scalings, network and the sum
        ``c_skip x + c_out F`` in float64, then rounded to ``x``'s dtype. An output that still is
        not finite is not representable there: ``ValueError`` naming ``sigma``, never a silent
        NaN or inf."""
        x, s = self._prepare_any(x, sigma)
        lab = self._label(label, x.shape[0])
        if x.shape[0] == 0:  # an empty batch: nothing to evaluate
            return x.new_empty(shape(0))
        ctx = torch.enable_grad if grad else torch.no_grad
        if s.dtype == self.dtype:
            with ctx():
                out = fn(self.model, x.to(dtype=self.dtype, device=self.device), s, lab)
            out = out.to(dtype=x.dtype, device=x.device)
            if bool(torch.isfinite(out).all()) or self.dtype == torch.float64:
                return check_sigma_output(out, s, what)
        s64 = s.to(torch.float64)
        with ctx():
            out = fn(self._float64_model(), x.to(dtype=torch.float64, device=self.device), s64, lab)
        return check_sigma_output(out.to(dtype=x.dtype, device=x.device), s64, what)

    def _label(self, label, batch: int):
        if label is None:
            return None
        if self.num_classes is None:
            raise ValueError("label: this network is unconditional (trained without labels); call it as D(x, sigma)")
        return check_labels(label, self.num_classes, batch).to(self.device)

    def __call__(self, x: torch.Tensor, sigma, label=None) -> torch.Tensor:
        """``D(x, sigma[, label])``: same shape, dtype and device as ``x`` (extreme sigma:
        :meth:`_run_network`)."""
        return self._run_network(
            "denoiser output",
            lambda m, xx, s, lab: m(xx, s, lab),
            x,
            sigma,
            label,
            shape=lambda b: (b, *self.event_shape),
        )

    def conditioned(self, label) -> Callable:
        """The denoiser ``D(., ., label)`` of a fixed label (an int, or a ``(B,)`` tensor for
        batches of ``B`` rows), for the samplers."""
        if self.num_classes is None:
            raise ValueError("label: this network is unconditional (trained without labels)")
        lab = torch.as_tensor(label)
        check_labels(lab, self.num_classes, None if lab.ndim else 1)
        return lambda x, sigma: self(x, sigma, label)

    def raw(self, x: torch.Tensor, sigma, label=None) -> torch.Tensor:
        """The raw network output: EDM ``F``, the VP noise prediction or the flow velocity."""
        return self._run_network(
            "network output",
            lambda m, xx, s, lab: m.raw(xx, s, lab),
            x,
            sigma,
            label,
            shape=lambda b: (b, *self.event_shape),
        )

    def _denoise(self, x, s):
        with torch.no_grad():
            return self.model(x.reshape(-1, *self.event_shape), s).reshape(x.shape)

    def jacobian(self, x: torch.Tensor, sigma, label=None) -> torch.Tensor:
        """``dD/dx`` per query, by autograd: ``(B, d, d)`` with ``d = prod(event_shape)``."""
        d, ev = self.dim, self.event_shape

        def jac(model, xx, s, lab):
            if lab is None:

                def one(xi, si):
                    return model(xi.reshape(1, *ev), si.reshape(1)).reshape(d)

                args = (xx.reshape(-1, d), s)
            else:

                def one(xi, si, li):
                    return model(xi.reshape(1, *ev), si.reshape(1), li.reshape(1)).reshape(d)

                args = (xx.reshape(-1, d), s, lab)
            return torch.func.vmap(torch.func.jacrev(one))(*args)

        return self._run_network("Jacobian", jac, x, sigma, label, shape=lambda b: (b, d, d), grad=True)

    def __repr__(self) -> str:
        c = self.config
        cond = f", num_classes={self.num_classes}" if self.num_classes is not None else ""
        return (
            f"NetworkDenoiser({c.get('net', '?')}, width={c.get('width', '?')}, "
            f"framework={self.framework!r}{cond}, event_shape={self.event_shape})"
        )
