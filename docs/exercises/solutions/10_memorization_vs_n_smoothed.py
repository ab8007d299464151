"""Exercise 10 (research): memorization against N for the exact and a smoothed empirical denoiser.

The exact empirical denoiser memorizes at every N. Smooth it (an isotropic Gaussian of width h
on each training point: a kernel density estimate, ``GaussianMixtureDenoiser.smoothed_empirical``)
and its flow samples the KDE instead. Whether a KDE sample still "copies" a training point by the
gap-ratio criterion depends on h against the spacing of the training points, which shrinks like
N^(-1/d): memorization must fall as N grows. Because the PF-ODE of an exact denoiser transports
N(0, sigma_max^2 I) (almost exactly p_sigma_max) to the law itself, the flow's memorization can be
predicted without any flow: sample the KDE directly (x_i + h z) and apply the same criterion.

Speed: the smoothed denoiser is the empirical one at a raised noise level,
``D_h(x, s) = s^2/(s^2 + h^2) D_0(x, sqrt(s^2 + h^2)) + h^2/(s^2 + h^2) x``, so the flow can use the
fast exact empirical kernel; the identity is checked against ``smoothed_empirical`` first.
"""

import torch

import gaussdiff as gd

F64 = torch.float64


class SmoothedEmpirical:
    """D_h(x, s) = s^2/(s^2+h^2) D_0(x, sqrt(s^2+h^2)) + h^2/(s^2+h^2) x, D_0 the empirical denoiser."""

    def __init__(self, train, h):
        self.emp, self.h2 = gd.EmpiricalDenoiser(train), h * h

    def __call__(self, x, sigma):
        s2 = float(sigma) ** 2
        return (s2 * self.emp(x, (s2 + self.h2) ** 0.5) + self.h2 * x) / (s2 + self.h2)


def solve(sizes=(8, 32, 128, 512, 2048), h=0.05, dim=2, n_samples=256, n_direct=4000, steps=32):
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(max(sizes), dim, generator=g, dtype=F64)
    sigmas = gd.karras_sigmas(steps)
    noise = gd.seeded_noise(n_samples, dim, seed=1) * sigmas[0]
    # the identity, against the mixture form, on a small problem
    check = pool[:64]
    q = torch.randn(32, dim, generator=g, dtype=F64)
    identity_err = max(
        float(
            (SmoothedEmpirical(check, h)(q, s) - gd.GaussianMixtureDenoiser.smoothed_empirical(check, h)(q, s))
            .abs()
            .max()
        )
        for s in (0.01, 0.1, 1.0, 10.0)
    )
    rows = []
    for n in sizes:
        train = pool[:n]  # nested subsets of one pool
        exact = gd.sample_heun(gd.EmpiricalDenoiser(train), noise, sigmas)
        kde = gd.sample_heun(SmoothedEmpirical(train, h), noise, sigmas)
        idx = torch.randint(n, (n_direct,), generator=g)
        direct = train[idx] + h * torch.randn(n_direct, dim, generator=g, dtype=F64)
        m_exact = gd.memorization_fraction(exact, train)
        m_kde = gd.memorization_fraction(kde, train)
        m_direct = gd.memorization_fraction(direct, train)
        rows.append(
            {
                "n": n,
                "exact": m_exact.value,
                "smoothed_flow": m_kde.value,
                "smoothed_flow_se": m_kde.se,
                "smoothed_direct": m_direct.value,
                "smoothed_direct_se": m_direct.se,
            }
        )
    return {"h": h, "rows": rows, "identity_err": identity_err}


if __name__ == "__main__":
    r = solve()
    print(f"h = {r['h']}; smoothed identity vs mixture form: {r['identity_err']:.1e}")
    print("     N  exact   smoothed flow    smoothed, sampled directly")
    for row in r["rows"]:
        print(
            "%6d  %5.3f   %5.3f +- %5.3f   %5.3f +- %5.3f"
            % (
                row["n"],
                row["exact"],
                row["smoothed_flow"],
                row["smoothed_flow_se"],
                row["smoothed_direct"],
                row["smoothed_direct_se"],
            )
        )
