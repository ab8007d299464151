"""Exercise 09: two models trained on disjoint data, sampled from the same noise (Kadkhodaie et al.).

Split a data set (here 2048 draws of a 16-dimensional Gaussian with power-law spectrum) into
two disjoint training sets A and B of size N. The exact empirical
denoisers of A and B can only return points of A and of B: their samples never agree.
The Gaussian denoisers fitted to A and B converge to the same Gaussian as N grows: their
samples from the same noise agree more and more. That is the closed-form skeleton of the
memorization -> generalization transition that Kadkhodaie et al. observe with networks.
"""

import torch

import gaussdiff as gd

F64 = torch.float64


def solve(sizes=(8, 32, 128, 512, 1024), n_samples=128, steps=18, threshold=0.9):
    data, _ = gd.gaussian_data(2048, 16, alpha=1.0, seed=0)  # (2048, 16), eigenvalues 1/k
    sigmas = gd.karras_sigmas(steps)
    noise = gd.seeded_noise(n_samples, data.shape[1:], seed=0) * sigmas[0]
    out = {"sizes": list(sizes), "gaussian": [], "empirical": [], "empirical_memorization": []}
    for n in sizes:
        a, b = (t.to(F64) for t in gd.disjoint_split(data, n, seed=0))
        samples = {}
        for name, make in (("gaussian", gd.GaussianDenoiser.fit), ("empirical", gd.EmpiricalDenoiser)):
            samples[name] = [gd.sample_heun(make(t), noise, sigmas) for t in (a, b)]
            rep = gd.reproducibility(*samples[name], similarity="cosine", threshold=threshold)
            out[name].append(rep.fraction.value)
        out["empirical_memorization"].append(gd.memorization_fraction(samples["empirical"][0], a).value)
    return out


if __name__ == "__main__":
    r = solve()
    print("     N  reproducibility(Gaussian A, B)  reproducibility(empirical A, B)  memorization(empirical)")
    for row in zip(r["sizes"], r["gaussian"], r["empirical"], r["empirical_memorization"]):
        print("%6d  %30.3f  %31.3f  %23.3f" % row)
