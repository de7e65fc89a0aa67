#!/usr/bin/env python3
"""An independent NumPy re-implementation of TDS (DAS with λ ≡ 1) and plain SMC on the GMM1 toy (issue #18, open
question b), written from methods.md §7–§9 and toy.md, sharing no code with the Rust crate.

It answers one question: is the gap between TDS/DAS and plain SMC on GMM1 (DAS/TDS outputs too narrow in the reward's
steep direction y) a defect of alignbench's weights, or a property of the gradient-shifted proposal? Both samplers
target the same law — the pretrained N-step chain tilted by exp(r(x₀)) — so with exact weights they must agree as
K → ∞. Run with pure importance sampling (kappa = 0: no resampling) the gap closes only slowly in K: the weights of
the gradient-shifted proposal are heavy-tailed. With the ESS rule (kappa = 0.5) it reproduces alignbench's numbers
(`alignbench run` with `steps: 20`, K = 10000, 100 groups: SMC E[y²] 0.156, TDS 0.131; here 0.156 and 0.129).

    .venv/bin/python scripts/check-tds-weights.py STEPS K GROUPS [KAPPA]
"""
import sys

import numpy as np

T = 1000
BETAS = np.linspace(1e-4, 0.02, T)
ALPHA_BAR = np.cumprod(1 - BETAS)
MEANS = np.array([[x, y] for x in (-4.0, 0.0, 4.0) for y in (-4.0, 0.0, 4.0)])  # GMM1, weights 1/9, Σ = 0.3·I
SIGMA2 = 0.3
A = np.diag([0.02, 2.0])  # r(x) = −½ xᵀAx


def reward(x):
    return -0.5 * np.einsum("ni,ij,nj->n", x, A, x)


def eps_and_hessian_parts(x, a):
    """Exact ε̂ of the noised mixture and the parts of ∇² log p_t (responsibilities, per-component scores)."""
    v = a * SIGMA2 + 1 - a
    diff = x[:, None, :] - np.sqrt(a) * MEANS[None]
    s = -diff / v
    lg = -0.5 * (diff**2).sum(-1) / v
    g = np.exp(lg - lg.max(1, keepdims=True))
    g /= g.sum(1, keepdims=True)
    sbar = (g[:, :, None] * s).sum(1)
    return -np.sqrt(1 - a) * sbar, g, s, sbar, v


def run(n, k, groups, kappa, guided, seed):
    rng = np.random.default_rng(seed)
    stride = T // n
    ts = [(n - 1 - i) * stride for i in range(n)]
    ey2 = []
    for _ in range(groups):
        x = rng.standard_normal((k, 2))
        lw = np.full(k, -np.log(k))
        tau = np.zeros(k)
        delta = np.zeros(k)
        for t in ts:
            a = ALPHA_BAR[t]
            ap = ALPHA_BAR[t - stride] if t >= stride else 1.0
            eps, g, s, sbar, v = eps_and_hessian_parts(x, a)
            x0 = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
            if guided:  # ∇_x r(x̂0(x)) = Jᵀ∇r, J = (I − √(1−a)·∂ε̂/∂x)/√a, ∂ε̂/∂x = −√(1−a)·∇² log p_t
                g0 = -x0 @ A
                u = -(np.sqrt(1 - a) / np.sqrt(a)) * g0
                su = (s * u[:, None, :]).sum(-1)
                hu = (g[:, :, None] * (-u[:, None, :] / v + s * su[:, :, None])).sum(1)
                hu -= sbar * (sbar * u).sum(-1, keepdims=True)
                grad = g0 / np.sqrt(a) - np.sqrt(1 - a) * hu
            else:
                grad = np.zeros_like(x)
            tau_new = reward(x0)  # λ ≡ 1
            lw = lw + delta + tau_new - tau
            lw -= lw.max() + np.log(np.exp(lw - lw.max()).sum())
            w = np.exp(lw)
            if 1 / (w**2).sum() < kappa * k:
                idx = rng.choice(k, k, p=w)
                x, eps, x0, grad, tau_new = x[idx], eps[idx], x0[idx], grad[idx], tau_new[idx]
                lw = np.full(k, -np.log(k))
            sig = np.sqrt((1 - ap) / (1 - a) * (1 - a / ap))
            mu = np.sqrt(ap) * x0 + np.sqrt(max(1 - ap - sig**2, 0.0)) * eps
            z = rng.standard_normal((k, 2))
            x = mu + sig * z + sig**2 * grad
            delta = -sig * (grad * z).sum(1) - 0.5 * sig**2 * (grad**2).sum(1)
            tau = tau_new
        lw = lw + delta + reward(x) - tau
        w = np.exp(lw - lw.max())
        w /= w.sum()
        ey2.append((w * x[:, 1] ** 2).sum())
    ey2 = np.array(ey2)
    return ey2.mean(), ey2.std() / np.sqrt(groups)


def main():
    n, k, groups = (int(a) for a in sys.argv[1:4])
    kappa = float(sys.argv[4]) if len(sys.argv) > 4 else 0.5
    for name, guided in (("smc", False), ("tds", True)):
        m, se = run(n, k, groups, kappa, guided, 1)
        print(f"{name}: steps {n}, K {k}, kappa {kappa}: E[y^2] = {m:.4f} ± {se:.4f} over {groups} groups")


if __name__ == "__main__":
    main()
