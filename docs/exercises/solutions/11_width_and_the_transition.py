"""Exercise 11 (research, slow: about a minute on one CPU core): where does the
memorization -> generalization transition move when the network width doubles?

Train small EDM MLPs of widths 16, 32, 64 on N = 4, 16, 64 points of a 2-d standard Gaussian
for a fixed budget of 2000 steps, sample each from the same noise with Heun, and measure the
memorization fraction (gap ratio 1/3). The transition size N_half(width) is where memorization
crosses 1/2, interpolated linearly in log N.
"""

import math

import torch

import gaussdiff as gd


def n_half(sizes, mem, level=0.5):
    """First crossing of ``level`` from above, interpolated in log N; None if never crossed."""
    for (n0, m0), (n1, m1) in zip(zip(sizes, mem), zip(sizes[1:], mem[1:])):
        if m0 >= level > m1:
            frac = (m0 - level) / (m0 - m1)
            return math.exp(math.log(n0) + frac * (math.log(n1) - math.log(n0)))
    return None


def solve(widths=(16, 32, 64), sizes=(4, 16, 64), steps=2000, n_samples=128, seed=0):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks: one thread is fastest on a busy CPU
    try:
        data, _ = gd.gaussian_data(1024, 2, alpha=0.0, seed=0)  # N(0, I) in 2-d
        sigmas = gd.karras_sigmas(18, dtype=torch.float32)
        noise = gd.seeded_noise(n_samples, 2, seed=seed, dtype=torch.float32) * sigmas[0]
        mem = {}
        for w in widths:
            mem[w] = []
            for n in sizes:
                train = gd.subset(data, n, seed)
                net = gd.train_denoiser(train, steps=steps, width=w, depth=2, seed=seed, progress=False)
                x = gd.sample_heun(net.denoiser, noise, sigmas)
                mem[w].append(gd.memorization_fraction(x, train).value)
    finally:
        torch.set_num_threads(threads)
    return {"sizes": list(sizes), "memorization": mem, "n_half": {w: n_half(sizes, m) for w, m in mem.items()}}


if __name__ == "__main__":
    r = solve()
    print("width  " + "  ".join(f"N={n:<4d}" for n in r["sizes"]) + "  N_half")
    for w, m in r["memorization"].items():
        nh = r["n_half"][w]
        print(f"{w:5d}  " + "  ".join(f"{v:6.3f}" for v in m) + ("   never" if nh is None else f"  {nh:6.1f}"))
