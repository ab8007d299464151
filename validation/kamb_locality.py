r"""Kamb & Ganguli (ICML 2025), "An analytic theory of creativity in convolutional diffusion
models" (arXiv 2412.20292; authors' code as forked in ``henhen724/convolutional_diffusion``), and
Lukoianov, Yuan, Solomon & Sitzmann (NeurIPS 2025), "Locality in image diffusion models emerges
from data statistics" (arXiv 2509.09672; ``ottogin/locality-in-diffusion-models``): the local
closed forms predict what a generalizing convolutional network draws.

Claims
------
1. (Kamb & Ganguli, abstract; their ``scripts/eval_script.py``) The equivariant local score (ELS)
   machine, its patch size calibrated against the trained network, predicts the network's
   samples from the same noise far better than the ideal (empirical, "IS") score machine; the
   issue adds the Gaussian denoiser (Li et al.'s global linear account) as the second global
   form. They report a median "r²" (the Pearson correlation ``r`` of mean-centred images, not
   squared) of about 0.94-0.96 for the ELS machine (the number quoted in issue 18).
2. (Kamb & Ganguli, their calibration of the locality scale, ``scripts/scales_calibration.py``)
   The calibrated patch size grows with the noise level: small patches at small sigma, large at
   large sigma.
3. (Lukoianov et al., abstract; their comparison, ``generate.py`` ``evaluate_comparison``) The
   analytic denoiser whose locality masks come from the data's Wiener filter matches the
   trained U-Net at least as well as the ELS machine (they report it better), in their
   observable, the variance-normalised r2.

The papers' observables (read in the authors' public code)
----------------------------------------------------------
* **Sample agreement** (Kamb & Ganguli): ``henhen724/convolutional_diffusion``
  ``scripts/eval_script.py`` (commit 3e089e2), lines 56-80: per seed, the network's sample and
  the machine's sample from the same seed, each centred by its own mean over all entries and
  normalised; the dot product is the per-image Pearson correlation
  (``gaussdiff.pearson_correlation``); the script prints the **median** over seeds for the
  ideal-score machine and for the ELS machine, and the **share of seeds whose ELS correlation
  exceeds the ideal machine's**.
* **Sample agreement** (Lukoianov et al.): ``src/local_diffusion/metrics.py``
  ``calculate_r2_score(analytic_x0, unet_x0)`` (read in its verbatim copies, see
  ``gaussdiff/metrics/agreement.py``): per image ``1 - ||x - y||^2 / (D var(y))`` with the
  unbiased variance of the network's image ``y``, **mean** over images
  (``gaussdiff.variance_normalised_r2(closed_form, network)``).
* **Calibration** (Kamb & Ganguli): ``scripts/scales_calibration.py`` (commit 55f499c),
  ``calibrate``: ``nsamps = 20`` fresh noises; along the *network's own* DDIM trajectory, at
  every step, each candidate kernel size's local score is compared with the network's score by
  the uncentred cosine (``eval_mode='cos'``, the default); each sample picks the size of largest
  cosine; the size per step is ``torch.median`` over the samples (the lower middle value). The
  same is done for each machine type (``scoremoduletype`` ``ELS``, ``bbELS``, ``LS``).
* **Data-driven masks**: ``gaussdiff.WienerMaskDenoiser`` with the authors' threshold 0.02 and
  temperature 1 (``configs/pca_locality/*.yaml``; the construction and every open choice are in
  ``gaussdiff/local/masks.py``).

Protocol
--------
Two offline image sets, each resized so that the closed forms fit 2 cores (the patch machines
cost ``O(B H W N H W k^2)``; ELS on 12x12 with N = 500 takes ~1.3 s per call of 16 images on
these cores, against ~10 s on 28x28 with N = 2000):

* ``mnist5k`` (the 5000-image MNIST subset, Kamb & Ganguli's MNIST), area-resized 28 -> 12;
* ``patches`` (grey non-overlapping 16x16 patches of the natural photos shipped with
  scikit-learn, scikit-image, PyWavelets and matplotlib; the stand-in for CIFAR-10, which
  cannot be read offline), area-resized 16 -> 12.

Fashion-MNIST (Debian ``dataset-fashion-mnist``) is not installed on the machine this was
written on, so it is not used. Per set: N = 500 training images (one seeded permutation), pixel
values in [-1, 1]. The network is the package's EDM U-Net (``net="unet"``: 3x3 convolutions,
zero padding, two levels at 12 px) *without normalisation layers* (``norm="none"``, as theirs:
below) of width 16, batch 64, Adam 1e-3, EMA 0.999, seed
0, trained by ``_common.train_to_plateau``: 500 steps, then doublings up to 8000, until the
excess of its training loss over the exact empirical optimum's (``gaussdiff.optimum_gap``, 2048
fixed draws) shrinks by less than 10 % per doubling (a plateau) or is at most half of the
Gaussian fit's excess (``close=0.5``: half of the gap between the Gaussian fit and the optimum
closed). The second rule is there because claim 1 compares with the Gaussian denoiser: a network
still in its early, near-linear stage (Li et al. 2024: generalizing networks pass near the
Gaussian first) cannot show "local beats Gaussian", while one that has closed half of the
Gaussian-to-optimum gap has left it. Sizing probes of exactly this training (no samples, no
claim measured) gave, at 500, 1000, 2000, 4000 (, 8000) steps: mnist5k excess 0.250, 0.214,
0.189, 0.162 (12-15 % per doubling, no plateau), Gaussian share 0.685, 0.587, 0.517, 0.443
(half-gap rule met at 4000); patches excess 0.138, 0.122, 0.110, 0.095, 0.077, Gaussian share
0.853, 0.757, 0.678, 0.588, 0.477 (met at 8000, hence the budget of 8000). Those probes were
of the U-Net with GroupNorm, before the package had ``norm="none"``; the norm-free network's
training is measured by the same rule, and criterion 0a says whether it met it.
Kamb & Ganguli's ``scripts/training_script.py`` (commit 55f499c) trains 300 epochs (batch 128,
Adam 1e-4) on the full training set (``--maxsamps`` 100000) a U-Net of channels 64-128-256
*without* normalisation layers (``--nonorm`` defaults to True), and their calibration builds the
machines on the first 5000 training images (``--maxsamps 5000``). Here: the package's U-Net,
also without normalisation (GroupNorm would make every output pixel depend on statistics of
the whole image, which no local machine can see), far narrower, a 500-image set for both
network and machines, and far fewer steps; "trained" is
the measured condition above and "generalizing" the measured memorization of its samples
(below).

Sampling: every model is sampled with the same deterministic Heun sampler
(``gaussdiff.sample_heun``) on EDM's grid ``karras_sigmas(10)`` (sigma 80 -> 0.002, then 0; 19
denoiser calls) from the same 32 seeded noises (``seeded_noise(seed=20250)``): the network; ELS,
bbELS and LS (zero padding, each with its own calibrated patch-size schedule); the data-driven
masks (``WienerMaskDenoiser``); the Gaussian denoiser of the training set
(``GaussianDenoiser.fit``) and the empirical denoiser (``EmpiricalDenoiser``). Kamb & Ganguli
sample 20 DDIM steps; the Heun grid has 10 levels to fit the budget.

Calibration (their protocol, on 16 other seeded noises, ``seed=777``): the network's Euler
(DDIM) trajectory on the same 10 levels; at each level sigma and for each variant (ELS, bbELS,
LS) and each odd size k in 1, 3, ..., 11 (ELS: k <= 12), the cosine between the machine's score
``(D_k(x, sigma) - x) / sigma^2`` and the network's at the network's current ``x``; each sample
picks the k of largest cosine (a tie: the smaller k); the level's size is the lower median over
the 16 samples. The schedule (``PatchSizeSchedule``) maps each sampling level to its calibrated
size (the calibration levels are the sampling levels).

Measured per set and per closed form, against the network's samples from the same noise: the
three agreement measures per image (``gaussdiff.agreement_measures``: R², Pearson ``r``,
variance-normalised r2 with the network as the target) with their median and mean; the
memorization of every model's samples (gap ratio 1/3, ``memorization_fraction``). Uncertainty:
a paired bootstrap over the 32 samples (2000 draws, ``numpy.random.default_rng(0)``), the 95 %
percentile interval; for claim 2 a bootstrap over the 16 calibration samples (re-drawing whole
trajectories, recomputing the lower median per level).

PASS criteria (fixed before the full run; on EACH of the two sets)
-----------------------------------------------------------------
0. The set-up can show the claims: (a) the network is trained (``train_to_plateau`` stopped with
   "plateau" or "close to the optimum", not "budget reached"), and (b) it generalizes: the
   memorization fraction of its 32 samples plus 2 bootstrap se is at most 0.1 (the house
   threshold of ``yi_empirical_optimum``).
1. Local beats global (Kamb & Ganguli's observable, their eval script's two statistics): for the
   calibrated ELS machine (bbELS for this zero-padded network: see the revision below) against each global form G in {empirical, Gaussian}: the paired
   bootstrap 95 % interval of ``median_i r(ELS_i, net_i) - median_i r(G_i, net_i)`` lies above
   0, **and** the share of samples with ``r(ELS_i, net_i) > r(G_i, net_i)`` exceeds 0.5 (the
   third number their script prints). Why no absolute level: the papers' 0.94-0.96 come from
   networks trained for 300 epochs on the full sets at full resolution (below); a two-core run
   cannot reproduce that network, and the claim is comparative ("far better than the ideal
   score machine"); the measured medians are reported beside the papers' number.
2. The calibrated patch size grows with sigma: the Spearman rank correlation between the
   sampling levels sigma and the calibrated ELS sizes (lower median over the calibration
   samples) has a bootstrap 95 % interval above 0, and the size at the largest level exceeds
   the size at the smallest. (A constant size gives a rank correlation of 0 by convention.)
3. Data-driven masks at least as well as ELS (Lukoianov et al.'s observable and summary): the
   paired bootstrap 95 % interval of ``mean_i vnR2(Wiener_i, net_i) - mean_i vnR2(ELS_i, net_i)``
   has its lower end above -0.05. "At least as well" is a non-inferiority statement; the margin
   0.05 is a twentieth of the measure's range between a useless (0) and a perfect (1)
   predictor, fixed here because neither paper states one (their claim is "better", which the
   point estimate and its interval report).

Revision after the first full run (a0d43f5 criteria, run at ca17ea1, 1002 s; set-up fixes only,
thresholds unchanged). That run compared *plain* ELS with a *zero-padded* U-Net. The authors'
calibration script builds plain ELS with ``mode='circular'`` (for circularly padded networks)
and uses ``LocalEquivBordersScoreModule``, bbELS, otherwise: the machine of the claims is the
one matching the network's padding, so a zero-padded network is compared with bbELS. Claims 1
to 3 above therefore read "the calibrated bbELS machine" wherever they say ELS (``MATCHED``);
plain ELS is reported as a finding. In the first run plain ELS calibrated to size 1 at most
levels on mnist5k (median r 0.255 against 0.85 for bbELS, 0.90 for LS and 0.82 for either
global form), which is what a machine that cannot see the border gives against a network that
can. Second fix: the patches network stopped at the 8000-step budget with a Gaussian share of
0.517 (criterion 0a: not trained), so the budget is 16000 steps (mnist5k met the half-gap rule
at 8000 and is unaffected). The first run's numbers are not a verdict: the decisive run is the
first one of this revision.

Findings (no verdict): the plain ELS and LS machines against the same yardsticks; every machine's
three measures (median and mean); the calibrated sizes of bbELS and LS; the mean calibration
cosine per size and level; the memorization of every sampler (ELS should be "creative": low);
the training history.

Full mode: the first run (budget 8000) took 1002 s on 2 shared cores (mnist5k 476 s: training
to 8000 steps 386 s; patches 525 s: training 412 s); with the 16000-step budget about 24 min
(patches training about twice as long). Earlier timing probes under heavier load: training
mnist5k to 4000 U-Net steps with its four optimum-gap evaluations 253 s, patches to 8000 steps
~620 s; calibration and sampling of the
seven models 265 s per set (measured with an untrained network on mnist5k, whose calibrated
sizes were mostly large; smaller calibrated patches cost up to 2x more per call); less on a
quiet machine. Fast mode (~25 s): the same two sets at 8x8, N = 100, width 8, 40 -> 80
training steps, 4 levels, sizes 1, 3, 5, 8 samples and 4 calibration samples (same shape; the
network is far from trained, so its verdict says nothing about the claims).

    python validation/kamb_locality.py --outdir out/val/kamb_locality          # ~23 min (busy 2 cores)
    python validation/kamb_locality.py --outdir out/val/kamb_locality --fast   # < 1 min
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Report, fmt, run_script, save_figure, train_to_plateau  # noqa: E402

import gaussdiff as gd  # noqa: E402

MEASURES = ("coefficient_of_determination", "pearson_correlation", "variance_normalised_r2")
SHORT = {"coefficient_of_determination": "R2", "pearson_correlation": "r", "variance_normalised_r2": "vnR2"}
PATCH_VARIANTS = ("els", "bbels", "ls")
# The ELS machine of the claims is the one matching the network's padding, as in the authors'
# calibration script (plain ELS with circular padding for circularly padded networks,
# LocalEquivBordersScoreModule otherwise): the U-Net here pads with zeros, so bbELS.
MATCHED, MATCHED_NAME = "bbels", "bbELS"
MACHINES = ("els", "bbels", "ls", "wiener", "gaussian", "empirical")
GLOBAL = ("empirical", "gaussian")
MEM_MAX = 0.1  # criterion 0(b)
MARGIN = 0.05  # criterion 3, non-inferiority margin on the mean variance-normalised r2
TOL = 0.1  # plateau: < 10 % gain per doubling
CLOSE = 0.5  # or: excess at most half of the Gaussian fit's (criterion 0a)
WIENER_THRESHOLD, WIENER_TEMPERATURE = 0.02, 1.0  # Lukoianov et al.'s configs
PAPER_MEDIAN_R = "0.94-0.96"  # Kamb & Ganguli's reported median "r²" of the ELS machine
SAMPLE_SEED, CALIB_SEED, SPLIT_SEED = 20250, 777, 0
FULL = dict(
    sets=(("mnist5k", "mnist5k:size=12", None), ("patches", "patches:size=16", 12)),
    n_train=500,
    width=16,
    batch=64,
    start=500,
    max_steps=16000,
    levels=10,
    sizes=(1, 3, 5, 7, 9, 11),
    n_samples=32,
    n_calib=16,
    n_boot=2000,
)
FAST = dict(
    sets=(("mnist5k", "mnist5k:size=8", None), ("patches", "patches:size=8", None)),
    n_train=100,
    width=8,
    batch=32,
    start=40,
    max_steps=80,
    levels=4,
    sizes=(1, 3, 5),
    n_samples=8,
    n_calib=4,
    n_boot=500,
)


# =============================================================================================
# statistics
# =============================================================================================


def spearman(x, y) -> float:
    """Spearman's rank correlation (average ranks for ties); 0 when either side is constant."""
    from scipy.stats import rankdata

    rx, ry = rankdata(np.asarray(x, float)), rankdata(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def lower_median(v: np.ndarray, axis: int = 0) -> np.ndarray:
    """``torch.median``'s median (the lower of the two middle values for an even count), as the
    authors' calibration takes it: always one of the values, so an odd patch size stays odd."""
    v = np.sort(np.asarray(v), axis=axis)
    return np.take(v, (v.shape[axis] - 1) // 2, axis=axis)


def paired_bootstrap(a, b, stat, n_boot: int, rng) -> dict:
    """``stat(a) - stat(b)`` on paired per-sample values, with its bootstrap se and 95 %
    percentile interval (the same resampled indices for both)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    reps = stat(a[idx], axis=1) - stat(b[idx], axis=1)
    lo, hi = np.quantile(reps, [0.025, 0.975])
    return {"value": float(stat(a) - stat(b)), "se": float(reps.std(ddof=1)), "ci": [float(lo), float(hi)]}


def spearman_bootstrap(choices: np.ndarray, sigmas: np.ndarray, n_boot: int, rng) -> dict:
    """Spearman(sigma, lower median over samples of the chosen size) and its bootstrap over the
    calibration samples (rows of ``choices`` (n_calib, S), whole trajectories re-drawn)."""
    value = spearman(sigmas, lower_median(choices, 0))
    idx = rng.integers(0, choices.shape[0], size=(n_boot, choices.shape[0]))
    reps = np.array([spearman(sigmas, lower_median(choices[i], 0)) for i in idx])
    lo, hi = np.quantile(reps, [0.025, 0.975])
    return {"value": value, "se": float(reps.std(ddof=1)), "ci": [float(lo), float(hi)]}


# =============================================================================================
# calibration along the network's trajectory (Kamb & Ganguli, scripts/scales_calibration.py)
# =============================================================================================


def calibrate_on_trajectory(net, train64, noise, grid, sizes) -> dict:
    """For each patch variant: the size each calibration sample picks at each level (largest
    cosine between the machine's score and the network's, at the network's own Euler/DDIM
    state), ``choices`` (n_calib, S); the lower median per level; the mean cosine per (level,
    size)."""
    H, W = train64.shape[2:]
    ks = {v: [k for k in sizes if v != "els" or k <= min(H, W)] for v in PATCH_VARIANTS}
    dens = {(v, k): gd.PatchDenoiser(train64, k, variant=v, padding="zeros") for v in PATCH_VARIANTS for k in ks[v]}
    S = grid.shape[0] - 1
    choices = {v: np.zeros((noise.shape[0], S), dtype=int) for v in PATCH_VARIANTS}
    cosines = {v: np.zeros((S, len(ks[v]))) for v in PATCH_VARIANTS}
    x = noise.clone()
    with torch.no_grad():
        for i in range(S):
            s, s_next = float(grid[i]), float(grid[i + 1])
            d_net = net(x, s).double()
            score_net = d_net - x  # the 1 / sigma^2 of both scores cancels in a cosine
            for v in PATCH_VARIANTS:
                cos = np.stack(
                    [gd.cosine_similarity(dens[v, k](x, s) - x, score_net).values.numpy() for k in ks[v]], 1
                )  # (n_calib, n_k)
                choices[v][:, i] = np.asarray(ks[v])[np.argmax(cos, 1)]  # first maximum: the smaller k
                cosines[v][i] = cos.mean(0)
            x = x + (s_next - s) * (x - d_net) / s  # the network's Euler (DDIM) step
    sig = grid[:-1].numpy()
    return {
        v: {
            "sizes": ks[v],
            "sigmas": sig.tolist(),
            "choices": choices[v].tolist(),
            "median": lower_median(choices[v], 0).astype(int).tolist(),
            "mean_cosine": cosines[v].tolist(),
        }
        for v in PATCH_VARIANTS
    }


def schedule_of(cal: dict) -> gd.PatchSizeSchedule:
    """The calibrated sizes as a schedule over increasing sigma."""
    order = np.argsort(cal["sigmas"])
    return gd.PatchSizeSchedule(
        tuple(float(cal["sigmas"][i]) for i in order), tuple(int(cal["median"][i]) for i in order)
    )


# =============================================================================================
# one data set
# =============================================================================================


def load_set(spec: str, resize, n: int) -> torch.Tensor:
    data, _, _ = gd.load_dataset(spec)
    if resize is not None:
        data = gd.resize_images(data, resize)
    perm = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(SPLIT_SEED))
    return data[perm[:n]].contiguous()


def run_set(name, spec, resize, cfg, outdir, threads, rng) -> dict:
    t0 = time.perf_counter()
    train = load_set(spec, resize, cfg["n_train"])
    train64 = train.double()
    shape = tuple(train.shape[1:])
    res, history, why = train_to_plateau(
        train,
        outdir=outdir / "models" / name,
        start=cfg["start"],
        max_steps=cfg["max_steps"],
        tol=TOL,
        close=CLOSE,
        fresh=True,
        net="unet",
        norm="none",
        width=cfg["width"],
        seed=0,
        batch_size=cfg["batch"],
        num_threads=threads,
    )
    net = res.denoiser
    t1 = time.perf_counter()
    grid = gd.karras_sigmas(cfg["levels"]).double()
    cal_noise = gd.seeded_noise(cfg["n_calib"], shape, seed=CALIB_SEED) * float(grid[0])
    cal = calibrate_on_trajectory(net, train64, cal_noise, grid, cfg["sizes"])
    t2 = time.perf_counter()
    noise = gd.seeded_noise(cfg["n_samples"], shape, seed=SAMPLE_SEED) * float(grid[0])
    models = {
        "els": gd.PatchDenoiser(train64, schedule_of(cal["els"]), variant="els"),
        "bbels": gd.PatchDenoiser(train64, schedule_of(cal["bbels"]), variant="bbels"),
        "ls": gd.PatchDenoiser(train64, schedule_of(cal["ls"]), variant="ls"),
        "wiener": gd.WienerMaskDenoiser(train64, threshold=WIENER_THRESHOLD, temperature=WIENER_TEMPERATURE),
        "gaussian": gd.GaussianDenoiser.fit(train64),
        "empirical": gd.EmpiricalDenoiser(train64),
    }
    with torch.no_grad():
        samples = {"network": gd.sample_heun(net, noise, grid).double()}
        for m, den in models.items():
            samples[m] = gd.sample_heun(den, noise, grid).double()
    t3 = time.perf_counter()
    agree = {
        m: {k: a.values.tolist() for k, a in gd.agreement_measures(samples[m], samples["network"]).items()}
        for m in MACHINES
    }
    mem = {}
    for m, x in samples.items():
        f = gd.memorization_fraction(x, train64, seed=0)
        mem[m] = {"value": f.value, "se": f.se}
    torch.save({k: v.float() for k, v in samples.items()}, outdir / f"samples_{name}.pt")
    # the paired statistics of the criteria
    r = {m: np.asarray(agree[m]["pearson_correlation"]) for m in MACHINES}
    vn = {m: np.asarray(agree[m]["variance_normalised_r2"]) for m in MACHINES}
    claim1 = {}
    for g in GLOBAL:
        st = paired_bootstrap(r[MATCHED], r[g], np.median, cfg["n_boot"], rng)
        st["share_local_better"] = float(np.mean(r[MATCHED] > r[g]))
        claim1[g] = st
    sig = np.asarray(cal[MATCHED]["sigmas"])
    claim2 = spearman_bootstrap(np.asarray(cal[MATCHED]["choices"]), sig, cfg["n_boot"], rng)
    med = cal[MATCHED]["median"]
    claim2["k_at_max_sigma"], claim2["k_at_min_sigma"] = int(med[int(np.argmax(sig))]), int(med[int(np.argmin(sig))])
    claim3 = paired_bootstrap(vn["wiener"], vn[MATCHED], np.mean, cfg["n_boot"], rng)
    findings = {  # the other local machines against the global ones, all measures (no verdict)
        f"{m}_vs_{g}_median_r": paired_bootstrap(r[m], r[g], np.median, cfg["n_boot"], rng)
        for m in ("els", "bbels", "ls", "wiener")
        if m != MATCHED
        for g in GLOBAL
    }
    summary = {
        m: {SHORT[k]: {"median": float(np.median(v)), "mean": float(np.mean(v))} for k, v in agree[m].items()}
        for m in MACHINES
    }
    return dict(
        name=name,
        spec=spec,
        resized=resize,
        shape=list(shape),
        n_train=train.shape[0],
        steps=res.step,
        stopped=why,
        history=history,
        calibration=cal,
        agreement=agree,
        summary=summary,
        memorization=mem,
        claim1=claim1,
        claim2=claim2,
        claim3=claim3,
        findings=findings,
        grid=grid.tolist(),
        seconds={"train": t1 - t0, "calibrate": t2 - t1, "sample": t3 - t2, "total": time.perf_counter() - t0},
        _samples=samples,
    )


# =============================================================================================
# main
# =============================================================================================


def main(argv=None) -> dict:
    return run_script(__doc__, argv, full=FULL, fast=FAST, body=_main)


def _main(args, cfg, threads) -> dict:
    rep = Report(
        "kamb_locality",
        claim="the local closed forms (the calibrated ELS machine matching the network's padding: bbELS "
        "for a zero-padded U-Net) predict a generalizing U-Net's samples far better than the global ones "
        "(empirical, Gaussian); the calibrated patch size grows with sigma; the data-driven locality masks "
        "do at least as well",
        source="Kamb & Ganguli, ICML 2025, 'An analytic theory of creativity in convolutional diffusion "
        "models' (henhen724/convolutional_diffusion scripts/eval_script.py, scripts/scales_calibration.py); "
        "Lukoianov et al., NeurIPS 2025, 'Locality in image diffusion models emerges from data statistics' "
        "(ottogin/locality-in-diffusion-models)",
        args=args,
        expected="per set: network trained (plateau, or half the Gaussian-to-optimum loss gap closed) and "
        f"memorization + 2 se <= 0.1; median Pearson r({MATCHED_NAME}, net) minus "
        f"r(G, net), G = empirical and Gaussian: 95% interval > 0 and {MATCHED_NAME} better on > half the "
        f"samples; Spearman(sigma, calibrated {MATCHED_NAME} k) 95% interval > 0, k(sigma_max) > k(sigma_min); "
        f"mean vnR2(Wiener) minus mean vnR2({MATCHED_NAME}): 95% interval low end > -{MARGIN}",
    )
    rng = np.random.default_rng(0)
    sets = []
    for name, spec, resize in cfg["sets"]:
        s = run_set(name, spec, resize, cfg, rep.outdir, threads, rng)
        sets.append(s)
        sm = s["summary"]
        print(
            f"   {name} {tuple(s['shape'])} N={s['n_train']}: {s['steps']} steps ({s['stopped']}, excess "
            f"{s['history'][-1]['excess']:.4f}); memorization net {s['memorization']['network']['value']:.2f}; "
            f"calibrated k (sigma high -> low) ELS {s['calibration']['els']['median']} "
            f"bbELS {s['calibration']['bbels']['median']} LS {s['calibration']['ls']['median']}; seconds: "
            + ", ".join(f"{k} {v:.0f}" for k, v in s["seconds"].items()),
            flush=True,
        )
        print(f"   {'machine':10s} " + " ".join(f"{'med ' + SHORT[m]:>9s} {'mean ' + SHORT[m]:>10s}" for m in MEASURES))
        for m in MACHINES:
            print(
                f"   {m:10s} "
                + " ".join(f"{sm[m][SHORT[k]]['median']:9.3f} {sm[m][SHORT[k]]['mean']:10.3f}" for k in MEASURES)
            )
    for s in sets:
        n = s["name"]
        mem = s["memorization"]["network"]
        rep.check(
            f"{n}: 0a network trained (excess training loss over the optimum)",
            value=s["history"][-1]["excess"],
            passed=s["stopped"] in ("plateau", "close to the optimum"),
            expected=f"stopped by the plateau (< {TOL:.0%} gain per doubling) or half-gap (Gaussian share <= "
            f"{CLOSE}) rule, not by the budget",
            note=f"{s['steps']} steps, {s['stopped']}; excess per length: "
            + ", ".join(
                f"{h['step']}: {h['excess']:.4f} (Gaussian share {h['gaussian_share']:.3f})" for h in s["history"]
            ),
        )
        rep.check(
            f"{n}: 0b network memorization (generalization regime)",
            value=mem["value"],
            se=mem["se"],
            passed=mem["value"] + 2 * mem["se"] <= MEM_MAX,
            expected=f"+ 2 se <= {MEM_MAX}",
            note="memorization of the other samplers: "
            + ", ".join(f"{m} {s['memorization'][m]['value']:.2f}" for m in MACHINES),
        )
        for g in GLOBAL:
            c = s["claim1"][g]
            sm = s["summary"]
            rep.check(
                f"{n}: 1 median Pearson r to the network's samples, calibrated {MATCHED_NAME} minus {g}",
                value=c["value"],
                se=c["se"],
                passed=c["ci"][0] > 0 and c["share_local_better"] > 0.5,
                expected=f"95% interval > 0 and {MATCHED_NAME} better on > 0.5 of the samples",
                note=f"95% [{c['ci'][0]:.3g}, {c['ci'][1]:.3g}]; {MATCHED_NAME} better on "
                f"{c['share_local_better']:.2f}; median r {MATCHED_NAME} {sm[MATCHED]['r']['median']:.3f}, "
                f"{g} {sm[g]['r']['median']:.3f}, plain ELS {sm['els']['r']['median']:.3f} "
                f"(paper: ELS {PAPER_MEDIAN_R})",
            )
        c = s["claim2"]
        rep.check(
            f"{n}: 2 Spearman(sigma, calibrated {MATCHED_NAME} patch size)",
            value=c["value"],
            se=c["se"],
            passed=c["ci"][0] > 0 and c["k_at_max_sigma"] > c["k_at_min_sigma"],
            expected="95% interval > 0 and k(sigma_max) > k(sigma_min)",
            note=f"95% [{c['ci'][0]:.3g}, {c['ci'][1]:.3g}]; k {c['k_at_min_sigma']} at sigma_min, "
            f"{c['k_at_max_sigma']} at sigma_max; sizes (sigma high -> low) {s['calibration'][MATCHED]['median']}",
        )
        c = s["claim3"]
        rep.check(
            f"{n}: 3 mean variance-normalised r2 to the network's samples, Wiener masks minus calibrated {MATCHED_NAME}",
            value=c["value"],
            se=c["se"],
            passed=c["ci"][0] > -MARGIN,
            expected=f"95% interval low end > -{MARGIN}",
            note=f"95% [{c['ci'][0]:.3g}, {c['ci'][1]:.3g}]; mean vnR2 Wiener "
            f"{s['summary']['wiener']['vnR2']['mean']:.3f}, {MATCHED_NAME} {s['summary'][MATCHED]['vnR2']['mean']:.3f}",
        )
    rep.note("config", {k: v for k, v in cfg.items()} | {"margin": MARGIN, "memorization_max": MEM_MAX})
    rep.note("sets", [{k: v for k, v in s.items() if not k.startswith("_")} for s in sets])
    fig = _figure(sets, rep.outdir / "kamb_locality.png")
    reasons = [
        f"{c['what']}: {fmt(c['value'], c['se'])} (expected {c['expected']})"
        for c in rep.checks
        if c["status"] == "FAIL"
    ]
    if args.fast:
        reasons.append(f"fast mode: at most {cfg['max_steps']} training steps, far from trained")
    return rep.finish(figures=[fig], reason="; ".join(reasons) if rep.status == "FAIL" else "")


def _figure(sets, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ("network",) + MACHINES
    n_show = 6
    fig, ax = plt.subplots(len(sets), 3, figsize=(16, 4.6 * len(sets)), squeeze=False)
    for j, s in enumerate(sets):
        a = ax[j, 0]
        for i, v in enumerate(PATCH_VARIANTS):
            cal = s["calibration"][v]
            a.plot(cal["sigmas"], cal["median"], "o-", color=f"C{i}", label=v.upper())
        a.set(xscale="log", xlabel="sigma", ylabel="calibrated patch size k", title=f"{s['name']}: claim 2")
        a.legend(fontsize=8)
        a = ax[j, 1]
        pos = np.arange(len(MACHINES))
        for i, meas in enumerate(MEASURES):
            vals = [
                s["summary"][m][SHORT[meas]]["median" if meas != "variance_normalised_r2" else "mean"] for m in MACHINES
            ]
            a.bar(pos + (i - 1) * 0.27, vals, width=0.27, color=f"C{i}", label=SHORT[meas])
        a.set_xticks(pos, [m for m in MACHINES], rotation=30)
        a.axhline(0, color="k", lw=0.5)
        a.set(ylim=(-0.5, 1.0), ylabel="agreement with the network's samples", title="claims 1 and 3 (vnR2: mean)")
        a.legend(fontsize=8)
        a = ax[j, 2]
        x = s["_samples"]
        C, H, W = s["shape"]
        tiles = np.ones((len(rows) * (H + 1), n_show * (W + 1))) * np.nan
        for r_i, m in enumerate(rows):
            for c_i in range(min(n_show, x[m].shape[0])):
                tiles[r_i * (H + 1) : r_i * (H + 1) + H, c_i * (W + 1) : c_i * (W + 1) + W] = x[m][c_i, 0].numpy()
        a.imshow(tiles, cmap="gray", vmin=-1, vmax=1)
        a.set_yticks([(H + 1) * i + H / 2 for i in range(len(rows))], rows)
        a.set_xticks([])
        a.set_title("same noise, one column per seed")
    return save_figure(fig, path)


if __name__ == "__main__":
    main()
