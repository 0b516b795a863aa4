"""K5: FGSM and PGD attacks on a policy's (normalized) observations within an L-inf ball.

The attacker maximizes a *decision loss* ``L(x')`` of the perturbed observation ``x' = x + δ``, ``||δ||_∞ <= ε``
(ε in normalized feature units, the units the policy sees after its observation normalizer), on the coordinates
``mask`` selects (the market features by default):

* discrete heads: ``L = -log π(a_ref | x')``, the reference action's log-probability pushed down (a decision flip);
* Gaussian heads: ``L = -Σ_a sign(μ_ref,a) · μ_a(x')``, the mean position pushed against its reference direction.

FGSM (Goodfellow et al. 2015): ``x' = x + ε · sign(∇_x L(x))``. PGD (Madry et al. 2018): ``k`` steps
``x ← Π_{B_ε(x0)}(x + α · sign(∇_x L(x)))`` from ``x0`` (or a seeded uniform start in the ball), the projection
clipping each coordinate to ``[x0 - ε, x0 + ε]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

LossFn = Callable[[torch.Tensor], torch.Tensor]


def decision_loss(head: torch.nn.Module, params: tuple[torch.Tensor, ...], reference: torch.Tensor) -> torch.Tensor:
    """Summed decision loss (see the module docstring) of head outputs ``params`` against ``reference`` (the
    reference actions for a discrete head, the reference means for a Gaussian head)."""
    if getattr(head, "kind", "") == "continuous":
        return -(torch.sign(reference) * params[0]).sum()
    return -head.log_prob(params, reference).sum()  # type: ignore[operator]


def _gradient_sign(loss_fn: LossFn, x: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(x), x)
    return grad.sign()


def fgsm(loss_fn: LossFn, x: torch.Tensor, eps: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """One signed-gradient step of size ``eps`` (only where ``mask`` is 1)."""
    step = eps * _gradient_sign(loss_fn, x)
    return (x + (step if mask is None else step * mask)).detach()


def pgd(loss_fn: LossFn, x: torch.Tensor, eps: float, steps: int, alpha: float | None = None,
        mask: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """``steps`` projected signed-gradient steps of size ``alpha`` (default ``2.5 ε / steps``) inside the ε-ball
    around ``x``; a seeded uniform random start when ``generator`` is given."""
    alpha = 2.5 * eps / steps if alpha is None else alpha
    x0 = x.detach()
    adv = x0.clone()
    if generator is not None:
        noise = (torch.rand(x0.shape, generator=generator, device=x0.device) * 2 - 1) * eps
        adv = adv + (noise if mask is None else noise * mask)
    for _ in range(steps):
        step = alpha * _gradient_sign(loss_fn, adv)
        adv = adv + (step if mask is None else step * mask)
        adv = torch.max(torch.min(adv, x0 + eps), x0 - eps).detach()
    return adv


def attack(loss_fn: LossFn, x: torch.Tensor, eps: float, steps: int = 1, alpha: float | None = None,
           mask: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """FGSM when ``steps == 1`` (and no random start), else PGD."""
    if steps == 1 and generator is None:
        return fgsm(loss_fn, x, eps, mask)
    return pgd(loss_fn, x, eps, steps, alpha, mask, generator)


def feature_mask(spec: object, target: str, device: torch.device | None = None) -> torch.Tensor | None:
    """``(D,)`` 1/0 mask of the coordinates an attack may move: the market features (``target="features"``) or
    everything (``"all"``: None)."""
    if target == "all":
        return None
    dim = int(spec.obs_dim)  # type: ignore[attr-defined]
    mask = torch.zeros(dim, device=device)
    mask[: int(spec.feature_dim)] = 1.0  # type: ignore[attr-defined]
    return mask
