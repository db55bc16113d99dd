"""NoiseScheduler against closed forms (Ho et al. 2020, Song et al. 2021, Nichol & Dhariwal 2021)."""
from __future__ import annotations

import math

import pytest
import torch

from models.scheduler import NoiseScheduler, SchedulerConfig, cosine_betas, gaussian_kl, linear_betas

SCHEDULES = ["linear", "cosine"]


@pytest.fixture(params=SCHEDULES)
def sched(request) -> NoiseScheduler:
    return NoiseScheduler(num_train_timesteps=200, schedule=request.param)


def test_alphas_cumprod_is_the_product_of_alphas(sched):
    betas = sched.betas
    for t in (0, 1, 57, 199):
        expected = math.prod(1.0 - float(b) for b in betas[: t + 1])
        assert float(sched.alphas_cumprod[t]) == pytest.approx(expected, rel=1e-12)
    assert float(sched.alphas_cumprod_prev[0]) == 1.0
    assert torch.equal(sched.alphas_cumprod_prev[1:], sched.alphas_cumprod[:-1])


def test_schedules_are_monotone_and_in_range():
    for betas in (linear_betas(1000), cosine_betas(1000), cosine_betas(50), linear_betas(50)):
        assert (betas > 0).all() and (betas < 1).all()
        ab = torch.cumprod(1 - betas, 0)
        assert (ab[1:] < ab[:-1]).all()  # ᾱ strictly decreasing
    cos = cosine_betas(1000)
    assert (cos[1:] >= cos[:-1] - 1e-12).all()  # cosine β non-decreasing
    assert float(torch.cumprod(1 - cos, 0)[-1]) < 1e-3  # ends (almost) pure noise
    # linear endpoints are scaled with T so short schedules end as noisy as long ones
    assert float(linear_betas(100)[-1]) == pytest.approx(0.2)


def test_add_noise_mean_and_variance_statistically():
    sched = NoiseScheduler(num_train_timesteps=1000)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = torch.full((n, 1), 1.5, dtype=torch.float64)
    for t in (0, 300, 999):
        noise = torch.randn(n, 1, generator=g, dtype=torch.float64)
        xt = sched.add_noise(x0, noise, torch.full((n,), t))
        ab = float(sched.alphas_cumprod[t])
        assert float(xt.mean()) == pytest.approx(math.sqrt(ab) * 1.5, abs=5e-3)
        assert float(xt.var()) == pytest.approx(1 - ab, rel=2e-2, abs=1e-5)


def test_add_noise_per_sample_timesteps_broadcast():
    sched = NoiseScheduler(num_train_timesteps=100)
    x0 = torch.ones(3, 1, 2, 2)
    noise = torch.zeros_like(x0)
    out = sched.add_noise(x0, noise, torch.tensor([0, 50, 99]))
    for i, t in enumerate((0, 50, 99)):
        assert torch.allclose(out[i], torch.full((1, 2, 2), math.sqrt(float(sched.alphas_cumprod[t]))))
    assert torch.allclose(sched.scale_clean(x0, torch.tensor([0, 50, 99])), out)


def test_posterior_coefficients_match_direct_formula(sched):
    """μ̃_t = √ᾱ_{t-1} β_t/(1-ᾱ_t) x_0 + √α_t (1-ᾱ_{t-1})/(1-ᾱ_t) x_t,  σ̃²_t = (1-ᾱ_{t-1})/(1-ᾱ_t) β_t."""
    x0 = torch.randn(4, 3, dtype=torch.float64)
    xt = torch.randn(4, 3, dtype=torch.float64)
    for t in (1, 10, 150, 199):
        b = float(sched.betas[t])
        ab = float(sched.alphas_cumprod[t])
        ab_prev = float(sched.alphas_cumprod[t - 1])
        mean_ref = math.sqrt(ab_prev) * b / (1 - ab) * x0 + math.sqrt(1 - b) * (1 - ab_prev) / (1 - ab) * xt
        var_ref = (1 - ab_prev) / (1 - ab) * b
        mean, var, logvar = sched.posterior_mean_variance(x0, xt, t)
        assert torch.allclose(mean, mean_ref, atol=1e-12)
        assert float(var.flatten()[0]) == pytest.approx(var_ref, rel=1e-10)
        assert float(logvar.flatten()[0]) == pytest.approx(math.log(var_ref), rel=1e-10)


def test_posterior_mean_of_true_x0_equals_bayes_by_sampling():
    """Monte-Carlo check of q(x_{t-1}|x_t,x_0): regress x_{t-1} on x_t for a fixed x_0."""
    sched = NoiseScheduler(num_train_timesteps=100)
    g = torch.Generator().manual_seed(1)
    n, t = 400_000, 40
    x0 = torch.full((n,), 0.7, dtype=torch.float64)
    ab_prev = sched.alphas_cumprod[t - 1]
    x_prev = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * torch.randn(n, generator=g, dtype=torch.float64)
    x_t = sched.alphas[t].sqrt() * x_prev + sched.betas[t].sqrt() * torch.randn(n, generator=g, dtype=torch.float64)
    mean, var, _ = sched.posterior_mean_variance(x0, x_t, t)
    resid = x_prev - mean
    assert float(resid.mean()) == pytest.approx(0.0, abs=3e-3)
    assert float(resid.var()) == pytest.approx(float(var.flatten()[0]), rel=2e-2)


def test_pred_original_sample_and_pred_noise_are_inverse(sched):
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(5, 1, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 1, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 3, 60, 120, 199])
    xt = sched.add_noise(x0, eps, t)
    assert torch.allclose(sched.pred_original_sample(xt, eps, t), x0, atol=1e-8)
    assert torch.allclose(sched.pred_noise(xt, x0, t), eps, atol=1e-8)


def test_ddpm_step_at_t0_returns_the_mean_without_noise():
    sched = NoiseScheduler(num_train_timesteps=50)
    x0 = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    eps = torch.randn_like(x0)
    xt = sched.add_noise(x0, eps, 0)
    out = sched.step(eps, 0, xt, generator=torch.Generator().manual_seed(0))
    mean, _, _, x0_hat = sched.model_mean_variance(xt, eps, 0)
    assert torch.equal(out.prev_sample, mean)
    assert torch.allclose(out.prev_sample, x0, atol=1e-10)  # at t=0 the posterior mean is x_0 itself
    assert torch.allclose(out.pred_original_sample, x0, atol=1e-10)


def test_ddpm_step_is_stochastic_with_posterior_std():
    sched = NoiseScheduler(num_train_timesteps=50)
    xt = torch.zeros(100_000, dtype=torch.float64)
    eps = torch.zeros_like(xt)
    out = sched.step(eps, 30, xt, generator=torch.Generator().manual_seed(0))
    assert float(out.prev_sample.std()) == pytest.approx(math.sqrt(float(sched.posterior_variance[30])), rel=2e-2)


@pytest.mark.parametrize("start", [0, 1, 17, 99, 199])
def test_ddim_eta0_with_true_eps_recovers_x0_exactly(sched, start):
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(2, 1, 3, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 1, 3, 3, generator=g, dtype=torch.float64)
    x = sched.add_noise(x0, eps, start)
    steps = sched.ddim_timesteps(10, start=start)
    for i, t in enumerate(steps):
        t_prev = steps[i + 1] if i + 1 < len(steps) else -1
        x = sched.ddim_step(eps, t, t_prev, x, eta=0.0).prev_sample
    assert torch.allclose(x, x0, atol=1e-8)


def test_ddim_timesteps():
    sched = NoiseScheduler(num_train_timesteps=1000)
    steps = sched.ddim_timesteps(10)
    assert steps[0] == 999 and steps[-1] == 0 and len(steps) == 10
    assert all(a > b for a, b in zip(steps, steps[1:]))
    assert sched.ddim_timesteps(50, start=3) == [3, 2, 1, 0]
    assert sched.ddim_timesteps(1, start=200) == [200]
    with pytest.raises(ValueError):
        sched.ddim_timesteps(5, start=1000)


def test_gaussian_kl_zero_for_equal_and_matches_closed_form():
    m = torch.tensor([0.3, -1.0])
    lv = torch.tensor([0.1, -2.0])
    assert torch.allclose(gaussian_kl(m, lv, m, lv), torch.zeros(2), atol=1e-7)
    # KL(N(1, 1) || N(0, 4)) = ln(2) + (1 + 1)/8 - 1/2
    kl = gaussian_kl(torch.tensor(1.0), torch.tensor(0.0), torch.tensor(0.0), torch.tensor(math.log(4.0)))
    assert float(kl) == pytest.approx(math.log(2) + 2 / 8 - 0.5, rel=1e-6)
    assert float(gaussian_kl(torch.tensor(2.0), torch.tensor(0.5), torch.tensor(-1.0), torch.tensor(0.0))) > 0


def test_config_and_errors():
    sched = NoiseScheduler(SchedulerConfig(num_train_timesteps=10, schedule="cosine"))
    assert sched.num_train_timesteps == 10 and sched.config.schedule == "cosine"
    assert list(sched.timesteps) == list(range(9, -1, -1))
    with pytest.raises(ValueError):
        NoiseScheduler(num_train_timesteps=1)
    with pytest.raises(ValueError, match="unknown schedule"):
        NoiseScheduler(schedule="sigmoid")
