"""Exercise 04: one ODE, many frameworks.

EDM, VP (DDPM/DDIM) and rectified flow differ only in s(t) and sigma(t). With the same exact
denoiser and the same noise they integrate the same probability-flow ODE, so as the steps grow
they reach the same sample: the exact flow's. And DDIM, written with its own update on the
scaled variable, is Euler on the sigma grid (whereas Euler in VP time is a different scheme).
"""

import torch

import gaussdiff as gd

F64 = torch.float64


def ddim(den, x_hat, ts, schedule):
    """DDIM (eta = 0) in its own variables: on the scaled x = s(t) x_hat with alpha_bar = s^2,
    x_next = sqrt(alpha_bar_next) x0_pred + sqrt(1 - alpha_bar_next) eps_pred."""
    sig, s = schedule.sigma(ts), schedule.s(ts)
    x = s[0] * x_hat
    for i in range(len(ts) - 1):
        x0_pred = den(x / s[i], float(sig[i]))
        eps_pred = (x / s[i] - x0_pred) / sig[i]  # (C3)
        abar_next = s[i + 1] ** 2
        x = abar_next.sqrt() * x0_pred + (1 - abar_next).sqrt() * eps_pred
    return x / s[-1]


def solve(n_steps=(8, 64, 512)):
    g = torch.Generator().manual_seed(2)
    d = 3
    A = torch.randn(d, d, generator=g, dtype=F64)
    den = gd.GaussianDenoiser(torch.zeros(d, dtype=F64), A @ A.T + 0.3 * torch.eye(d, dtype=F64))
    x = gd.seeded_noise(8, d, seed=3) * 80.0  # the shared noise, unscaled
    exact = den.flow(x, 80.0, 0.0)
    vp, rf = gd.VP(), gd.RectifiedFlow()
    runs = {
        # Heun on the EDM rho = 7 sigma grid
        "edm_heun": lambda n: gd.sample_heun(den, x, gd.karras_sigmas(n)),
        # Euler in VP time on the scaled variable (EDM Algorithm 1 with the VP schedule)
        "vp_euler_in_t": lambda n: gd.sample_euler(den, x, schedule=vp, ts=vp.time_grid(n, sigma_max=80.0)),
        # DDIM: the same time grid, given as sigmas, Euler in sigma
        "vp_ddim": lambda n: gd.sample_euler(den, x, vp.sigma(vp.time_grid(n, sigma_max=80.0))),
        # Euler in rectified-flow time t = sigma / (1 + sigma), uniform grid
        "flow_euler": lambda n: gd.sample_euler(den, x, schedule=rf, ts=rf.time_grid(n, sigma_max=80.0)),
    }
    err = {name: [float((run(n) - exact).norm(dim=1).max()) for n in n_steps] for name, run in runs.items()}
    # DDIM's own update equals Euler on the sigma grid, to rounding
    ddim_vs_euler = max(
        float((ddim(den, x, vp.time_grid(n, sigma_max=80.0), vp) - runs["vp_ddim"](n)).abs().max()) for n in n_steps
    )
    return {"errors": err, "n_steps": list(n_steps), "ddim_vs_euler_in_sigma": ddim_vs_euler}


if __name__ == "__main__":
    r = solve()
    print("max distance to the exact flow's sample, steps", r["n_steps"])
    for name, e in r["errors"].items():
        print(f"  {name:20s}", ["%.2e" % v for v in e])
    print("DDIM update vs Euler on the same sigmas: %.2e" % r["ddim_vs_euler_in_sigma"])
