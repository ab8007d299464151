"""Exercise 05: the exact empirical flow lands on training points; the Gaussian flow does not.

The optimal denoiser of a finite training set is a softmax-weighted average of the training
points (theory (E2)). Its probability-flow ODE can only end on a training point: the model
memorizes. Sample it and the fitted Gaussian from the same noise and measure it.
"""

import torch

import gaussdiff as gd

F64 = torch.float64


def solve(n_train=16, dim=2, n_samples=128, steps=32):
    train = torch.randn(n_train, dim, generator=torch.Generator().manual_seed(0), dtype=F64)
    sigmas = gd.karras_sigmas(steps)
    noise = gd.seeded_noise(n_samples, dim, seed=1) * sigmas[0]
    out = {}
    for name, den in (("empirical", gd.EmpiricalDenoiser(train)), ("gaussian", gd.GaussianDenoiser.fit(train))):
        x = gd.sample_heun(den, noise, sigmas)
        dist, idx = gd.nearest_training(x, train, k=2)
        mem = gd.memorization_fraction(x, train, neighbors=(dist, idx))
        out[name] = {
            "memorization": mem.value,
            "memorization_se": mem.se,
            "max_nn_distance": float(dist[:, 0].max()),
            "distinct_points_hit": int(torch.unique(idx[:, 0]).numel()),
        }
    # at the last noise level the empirical posterior is carried by one training point
    emp = gd.EmpiricalDenoiser(train)
    x_small = train + 1e-3 * gd.seeded_noise(n_train, dim, seed=2)
    out["effective_count_at_sigma_0.002"] = float(emp.effective_count(x_small, 0.002).max())
    return out


if __name__ == "__main__":
    for k, v in solve().items():
        print(k, v)
