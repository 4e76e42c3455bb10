"""Denoising diffusion machinery: noise schedules, the forward process, x_0-parameterised ancestral sampling
and classifier-free guidance.

DDPM of Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020 (Eq. 4: the forward
marginal; Eq. 6-7: the posterior q(x_{t-1} | x_t, x_0)), with the network predicting x_0 instead of the
noise, as DreamRec does (Yang et al., "Generate What You Prefer: Reshaping Sequential Recommendation via
Guided Diffusion", NeurIPS 2023, Sec. 4), and classifier-free guidance (Ho & Salimans, "Classifier-Free
Diffusion Guidance", 2021, Eq. 6): the guided prediction is ``(1 + w) f(x_t, c, t) - w f(x_t, null, t)``.

Time steps are 0-based: ``t`` in ``[0, T)`` indexes ``betas[t]``; ``alpha_bar[t] = prod_{s <= t} (1 - beta_s)``.
Sampling starts at ``x_{T-1} ~ N(0, I)`` and ends with the posterior mean at ``t = 0`` (no noise added).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

SCHEDULES = ("linear", "cosine", "exp")
"""Beta schedules: ``linear`` (Ho et al. 2020), ``cosine`` (Nichol & Dhariwal 2021), ``exp`` (DreamRec's
public code default: the variance-preserving SDE of Song et al. 2021 discretised over T steps)."""

VP_BETA_MIN, VP_BETA_MAX = 0.1, 10.0
"""beta_min and beta_max of the ``exp`` (VP-SDE) schedule, as in Song et al. 2021 and DreamRec's code."""

COSINE_OFFSET, MAX_BETA = 0.008, 0.999
"""The offset s of the cosine schedule and the cap on every beta (Nichol & Dhariwal 2021, Sec. 3.2)."""


def beta_schedule(name: str, timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """``[T]`` float64 betas of the named schedule.

    ``linear``: ``beta_t`` evenly spaced from ``beta_start`` to ``beta_end`` (Ho et al. 2020, who use T = 1000;
    with far fewer steps alpha_bar stays well above 0, so the forward process does not reach noise).
    ``cosine``: ``alpha_bar(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2)`` normalised to 1 at t = 0,
    ``beta_t = 1 - alpha_bar(t + 1) / alpha_bar(t)`` capped at 0.999 (Nichol & Dhariwal 2021, Eq. 17).
    ``exp``: ``beta(u) = beta_min + u (beta_max - beta_min)`` on ``u`` in [0, 1] integrated over each of the T
    steps, ``beta_t = 1 - exp(-beta_min / T - (beta_max - beta_min) (2t + 1) / (2 T^2))`` (Song et al. 2021,
    Eq. 11). ``cosine`` and ``exp`` reach ``alpha_bar ~ 0`` for any T.
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be at least 1, got {timesteps}")
    steps = torch.arange(timesteps, dtype=torch.float64)
    if name == "linear":
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    if name == "cosine":
        grid = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        alpha_bar = torch.cos((grid + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=MAX_BETA)
    if name == "exp":
        exponent = VP_BETA_MIN / timesteps + (VP_BETA_MAX - VP_BETA_MIN) * (2 * steps + 1) / (2 * timesteps ** 2)
        return (1 - torch.exp(-exponent)).clamp(max=MAX_BETA)
    raise ValueError(f"unknown beta schedule '{name}'; choose from {', '.join(SCHEDULES)}")


def guided(conditional: torch.Tensor, unconditional: torch.Tensor, weight: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2021, Eq. 6): ``(1 + w) * conditional - w * unconditional``."""
    return (1 + weight) * conditional - weight * unconditional


class SinusoidalTimeEmbedding(nn.Module):
    """Transformer sinusoidal features of the step index (Vaswani et al. 2017), ``[n] -> [n, dim]``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"the time embedding width must be even and at least 4, got {dim}")
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / (half - 1))
        angles = t.float()[:, None] * frequencies[None]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class GaussianDiffusion(nn.Module):
    """The forward process q(x_t | x_0) and ancestral sampling with an x_0-predicting network.

    All coefficients are float32 buffers (not saved in state dicts), so they follow the module's device.
    """

    def __init__(self, timesteps: int, schedule: str = "exp", beta_start: float = 1e-4,
                 beta_end: float = 0.02) -> None:
        super().__init__()
        self.timesteps = timesteps
        self.schedule = schedule
        betas = beta_schedule(schedule, timesteps, beta_start, beta_end)
        alphas = 1 - betas
        alpha_bar = torch.cumprod(alphas, dim=0)
        alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
        buffers = {
            "betas": betas,
            "alpha_bar": alpha_bar,
            "sqrt_alpha_bar": alpha_bar.sqrt(),
            "sqrt_one_minus_alpha_bar": (1 - alpha_bar).sqrt(),
            # Posterior q(x_{t-1} | x_t, x_0) = N(coef_x0 * x_0 + coef_xt * x_t, variance) (Ho et al. 2020, Eq. 7).
            "posterior_coef_x0": betas * alpha_bar_prev.sqrt() / (1 - alpha_bar),
            "posterior_coef_xt": (1 - alpha_bar_prev) * alphas.sqrt() / (1 - alpha_bar),
            "posterior_variance": betas * (1 - alpha_bar_prev) / (1 - alpha_bar),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.float(), persistent=False)

    @staticmethod
    def _at(coefficients: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``coefficients[t]`` shaped to broadcast over ``like`` (``[B] -> [B, 1, ...]``)."""
        return coefficients[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def sample_timesteps(self, n: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[n]`` steps drawn uniformly from ``[0, T)``."""
        return torch.randint(0, self.timesteps, (n,), device=device, generator=generator)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Ho et al. 2020, Eq. 4: ``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps``."""
        return self._at(self.sqrt_alpha_bar, t, x0) * x0 + self._at(self.sqrt_one_minus_alpha_bar, t, x0) * noise

    def posterior_mean(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, Eq. 7), with x_0 the network's prediction."""
        return self._at(self.posterior_coef_x0, t, xt) * x0 + self._at(self.posterior_coef_xt, t, xt) * xt

    @torch.no_grad()
    def p_sample_loop(self, predict_x0: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], shape: tuple[int, ...],
                      generator: torch.Generator, device: torch.device,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Ancestral sampling (Ho et al. 2020, Alg. 2, x_0-parameterised) from ``x_{T-1} ~ N(0, I)`` to x_0.

        ``predict_x0(x_t, t)`` returns the (guided) x_0 prediction for ``x_t`` ``[B, ...]`` at steps ``t`` ``[B]``;
        every draw comes from ``generator``, so a fixed generator state gives a fixed result.
        """
        x = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        for step in reversed(range(self.timesteps)):
            t = torch.full((shape[0],), step, device=device, dtype=torch.long)
            x_mean = self.posterior_mean(predict_x0(x, t), x, t)
            if step > 0:
                noise = torch.randn(shape, generator=generator, device=device, dtype=dtype)
                x = x_mean + self._at(self.posterior_variance, t, x).sqrt() * noise
            else:
                x = x_mean
        return x
