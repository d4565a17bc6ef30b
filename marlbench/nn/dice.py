"""Pieces shared by the DICE algorithms (OptiDICE, AlberDICE): f-divergences and the ν-loss.

DICE methods solve the behaviour-regularised problem over stationary distributions

    max_{d >= 0}  E_d[r] - α D_f(d || d^D)   s.t. the Bellman flow constraints,

whose Lagrangian with multiplier ν(s) has, for each sample, the closed-form inner maximiser
w = d / d^D = max(0, (f')^{-1}(e_ν / α)) with the "advantage" e_ν(s, a, s') =
r + γ (1 - done) ν(s') - ν(s). What is left is a convex problem in ν alone (OptiDICE, Lee et
al. 2021, eq. 9-12):

    L(ν, λ) = (1 - γ) E_{s0 ~ p0}[ν(s0)] + E_D[α f*((e_ν - λ) / α)] + λ

with f* the convex conjugate of f restricted to w >= 0 and λ the multiplier of the
normalisation E_D[w] = 1 (the "bestdice" form of the OptiDICE authors' code,
github.com/secury/optidice neural_dice_rl.py: minimising over λ makes the weights average 1).

For the KL divergence the minimisation over λ is analytic and L becomes the log-sum-exp
objective that the AlberDICE authors' code uses for both of its DICE learners
(github.com/dematsunaga/alberdice, pymarl-master/src/learners/optidice_learner.py and
alberdice_learner.py):

    L(ν) = (1 - γ) E_{p0}[ν(s0)] + α log E_D[exp(e_ν / α)],   w = exp(e_ν / α) / E_D[exp(e_ν / α)]

Closed forms (secury/optidice neural_dice_rl.py; x = (e - λ) / α):

    kl         f(w) = w log w              w(x) = exp(x - 1)     f*(x) = exp(x - 1)
    chisquare  f(w) = (w - 1)^2 / 2        w(x) = max(0, x + 1)  f*(x) = x^2/2 + x (x >= -1),
                                                                       -1/2 (x < -1)
    softchi    f(w) = w log w - w + 1      w(x) = exp(x) (x < 0), f*(x) = exp(x) - 1 (x < 0),
                      (w < 1),                    x + 1 (x >= 0)        x^2/2 + x (x >= 0)
                      (w - 1)^2 / 2 (w >= 1)

Samples may carry importance weights ρ (AlberDICE reweights the other agents' dataset actions
to their current policies); every expectation over D above is then E_D[ρ ...].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

F_DIVERGENCES = ("kl", "chisquare", "softchi")


def f_value(name: str, w: torch.Tensor) -> torch.Tensor:
    """f(w) for w >= 0."""
    if name == "kl":
        return w * torch.log(w.clamp_min(1e-10))
    if name == "chisquare":
        return 0.5 * (w - 1) ** 2
    if name == "softchi":
        return torch.where(w < 1, w * torch.log(w.clamp_min(1e-10)) - w + 1, 0.5 * (w - 1) ** 2)
    raise ValueError(f"unknown f-divergence {name!r}; choose one of {F_DIVERGENCES}")


def f_weight(name: str, x: torch.Tensor) -> torch.Tensor:
    """The inner maximiser w(x) = max(0, (f')^{-1}(x)) = argmax_{w >= 0} w x - f(w)."""
    if name == "kl":
        return torch.exp(x - 1)
    if name == "chisquare":
        return F.relu(x + 1)
    if name == "softchi":
        return torch.where(x < 0, torch.exp(x.clamp_max(0)), x + 1)
    raise ValueError(f"unknown f-divergence {name!r}; choose one of {F_DIVERGENCES}")


def f_conjugate(name: str, x: torch.Tensor) -> torch.Tensor:
    """f*(x) = max_{w >= 0} w x - f(w), in closed form."""
    if name == "kl":
        return torch.exp(x - 1)
    if name == "chisquare":
        return torch.where(x >= -1, 0.5 * x ** 2 + x, torch.full_like(x, -0.5))
    if name == "softchi":
        return torch.where(x < 0, torch.exp(x.clamp_max(0)) - 1, 0.5 * x ** 2 + x)
    raise ValueError(f"unknown f-divergence {name!r}; choose one of {F_DIVERGENCES}")


class Normaliser(nn.Module):
    """The scalar multiplier λ of E_D[w] = 1 (unused by the KL form, which is normalised
    analytically). A module so that it is saved with the checkpoint."""

    def __init__(self):
        super().__init__()
        self.lam = nn.Parameter(torch.zeros(()))


def _log_rho(e: torch.Tensor, rho: torch.Tensor | None) -> torch.Tensor:
    return torch.zeros_like(e) if rho is None else torch.log(rho.clamp_min(1e-10))


def dual_term(name: str, e: torch.Tensor, alpha: float, lam: torch.Tensor,
              rho: torch.Tensor | None = None) -> torch.Tensor:
    """E_D[ρ α f*((e - λ) / α)] + λ, or α log E_D[ρ exp(e / α)] for KL (e, ρ: [B])."""
    if name == "kl":
        return alpha * (torch.logsumexp(e / alpha + _log_rho(e, rho), 0) - math.log(e.numel()))
    rho_ = torch.ones_like(e) if rho is None else rho
    return (rho_ * alpha * f_conjugate(name, (e - lam) / alpha)).mean() + lam


def nu_loss(name: str, e: torch.Tensor, nu_init: torch.Tensor, alpha: float, gamma: float,
            lam: torch.Tensor, rho: torch.Tensor | None = None) -> torch.Tensor:
    """The DICE Lagrangian L(ν, λ), minimised jointly over ν and λ (see the module docstring)."""
    return (1 - gamma) * nu_init.mean() + dual_term(name, e, alpha, lam, rho)


@torch.no_grad()
def correction_weights(name: str, e: torch.Tensor, alpha: float, lam: torch.Tensor,
                       rho: torch.Tensor | None = None) -> torch.Tensor:
    """w = d*/d^D for each sample (e: [B]); KL weights are self-normalised over the batch,
    E_batch[ρ w] = 1 (the max is subtracted first, as in optidice_learner.py)."""
    if name == "kl":
        z = e / alpha
        w = torch.exp(z - z.max())
        return w / ((w if rho is None else rho * w).mean()).clamp_min(1e-30)
    return f_weight(name, (e - lam) / alpha)


def gradient_penalty(net: nn.Module, states: torch.Tensor,
                     gen: torch.Generator | None = None) -> torch.Tensor:
    """E[||∇_s ν(s)||^2] at random interpolations between two halves of the batch's states.

    The AlberDICE authors' learners add it to the ν-loss (coefficient `nu_grad_penalty_coeff`);
    they interpolate between the batch's first and (time-shuffled) second half of episodes.
    Here the batch is single transitions, so the halves are paired as sampled.
    """
    half = states.shape[0] // 2
    s1, s2 = states[:half], states[half:2 * half]
    eps = torch.rand(half, 1, device=states.device, generator=gen)
    with torch.enable_grad():  # also when a caller only evaluates the loss
        inter = (eps * s1 + (1 - eps) * s2).detach().requires_grad_(True)
        out = net(inter)
        (grad,) = torch.autograd.grad(out.sum(), inter, create_graph=torch.is_grad_enabled())
    return grad.pow(2).sum(-1).mean()


def validate(name: str, alpha: float) -> None:
    if name not in F_DIVERGENCES:
        raise ValueError(f"unknown f-divergence {name!r}; choose one of {F_DIVERGENCES}")
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
