"""The flow <-> DDPM bridge, P, Q, KL and DDIM (cod.diffc.bridge) against a direct
transcription of the original formulas (spec §11.2; downstream/diffc/lib: models/CoD.py,
diffc/utils/p.py, q.py, denoise.py), the B8 off-by-one, and the perfect-predictor case."""
import math

import numpy as np
import pytest
import torch

from cod.diffc import bridge

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ the original, transcribed
def orig_sigma_to_snr(sigma):
    return (1 - sigma) / sigma


with np.errstate(divide="ignore"):  # entry 0 is inf, as in the original
    SNR_TABLE = torch.tensor([orig_sigma_to_snr(s) for s in np.arange(1000) / 1000], dtype=torch.float64)


def orig_get_timestep_snr(tau, fixed=False):
    """``snr_values[tau - 1]`` (B8); ``fixed`` looks up sigma = tau / 1000 instead."""
    if tau == 0:
        return torch.inf
    return torch.tensor(orig_sigma_to_snr(tau / 1000), dtype=torch.float64) if fixed else SNR_TABLE[tau - 1]


def orig_alpha_beta(snr):
    alpha_prod = 1 if snr == torch.inf else snr**2 / (1 + snr**2)
    return alpha_prod, 1 - alpha_prod


def orig_ot_flow_to_ddpm_factor(snr):
    ot_sigma = 1 / (snr + 1)
    alpha_cumprod = snr**2 / (snr**2 + 1)
    return torch.sqrt(1 - alpha_cumprod) / ot_sigma


def orig_predict_noise(denoiser, noisy_latent, tau, fixed=False):
    snr = orig_get_timestep_snr(tau, fixed)
    ot_flow_latent = noisy_latent / orig_ot_flow_to_ddpm_factor(snr)
    t_cur = 1 - torch.tensor([tau / 1000])
    ot_flow_noise_pred = -denoiser(ot_flow_latent, t_cur)
    sigma = 1 / (snr + 1)
    alpha_prod_t, beta_prod_t = orig_alpha_beta(snr)
    x0_hat = ot_flow_latent - sigma * ot_flow_noise_pred
    return (noisy_latent - alpha_prod_t**0.5 * x0_hat) / beta_prod_t**0.5


def orig_P(noisy_latent, noise_prediction, current_snr, prev_snr):
    alpha_prod_t, beta_prod_t = orig_alpha_beta(current_snr)
    alpha_prod_t_prev, beta_prod_t_prev = orig_alpha_beta(prev_snr)
    current_alpha_t = alpha_prod_t / alpha_prod_t_prev
    current_beta_t = 1 - current_alpha_t
    pred_original_sample = (noisy_latent - beta_prod_t**0.5 * noise_prediction) / alpha_prod_t**0.5
    pred_original_sample_coeff = (alpha_prod_t_prev**0.5 * current_beta_t) / beta_prod_t
    current_sample_coeff = current_alpha_t**0.5 * beta_prod_t_prev / beta_prod_t
    pred_prev_sample = pred_original_sample_coeff * pred_original_sample + current_sample_coeff * noisy_latent
    variance = (1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * current_beta_t
    return pred_prev_sample, variance**0.5


def orig_Q(noisy_latent, target_latent, current_snr, prev_snr):
    alpha_prod_t, beta_prod_t = orig_alpha_beta(current_snr)
    alpha_prod_t_prev, beta_prod_t_prev = orig_alpha_beta(prev_snr)
    current_alpha_t = alpha_prod_t / alpha_prod_t_prev
    current_beta_t = 1 - current_alpha_t
    pred_original_sample_coeff = (alpha_prod_t_prev**0.5 * current_beta_t) / beta_prod_t
    current_sample_coeff = current_alpha_t**0.5 * beta_prod_t_prev / beta_prod_t
    return pred_original_sample_coeff * target_latent + current_sample_coeff * noisy_latent


def orig_dkl(q_mu, p_mu, std):
    mu = ((q_mu - p_mu) / std).flatten().numpy()
    return 0.5 * float((mu.astype(np.float32) ** 2).sum() / np.log(2))


def orig_ddim(latent, noise_prediction, current_snr, prev_snr):
    alpha_prod_t, _ = orig_alpha_beta(current_snr)
    alpha_prod_t_prev, _ = orig_alpha_beta(prev_snr)
    beta_prod_t = 1 - alpha_prod_t
    pred_original_sample = (latent - beta_prod_t**0.5 * noise_prediction) / alpha_prod_t**0.5
    return alpha_prod_t_prev**0.5 * pred_original_sample + (1 - alpha_prod_t_prev) ** 0.5 * noise_prediction


# ------------------------------------------------------------------ helpers
def fake_velocity(x, t):
    """A smooth deterministic stand-in for the network (float64 throughout)."""
    return torch.tanh(x.double() * 0.7) * (1.5 - t.double()) + 0.1


def data(seed=0, shape=(1, 3, 8, 12)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1, torch.randn(shape, generator=g, dtype=torch.float64)


PAIRS = [(972, 949), (530, 520), (101, 99), (21, 20), (3, 2)]


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("tau", [1000, 972, 500, 99, 20, 2])
def test_times_and_scales(tau):
    snr = orig_get_timestep_snr(tau, fixed=True)
    ab, _ = orig_alpha_beta(snr)
    assert bridge.alpha_bar(tau) == pytest.approx(float(ab), rel=1e-14, abs=1e-300)
    assert bridge.flow_time(tau) == pytest.approx(1 - tau / 1000)
    # the original's 1 - abar cancels near tau = 0 (ours is exact rationals): 1e-9 there
    assert bridge.vp_to_flow_scale(tau) == pytest.approx(1 / float(orig_ot_flow_to_ddpm_factor(snr)), rel=1e-9)
    assert bridge.snr(tau) == pytest.approx(float(snr), rel=1e-14)


def test_b8_offset_of_the_original():
    """The original's SNR of tau is ours at tau - 1 (its network time is ours at tau): we fix
    it, so at the latent schedule's end (tau 2) the two differ by 2x in noise level."""
    for tau in (972, 100, 20, 2):
        assert float(orig_get_timestep_snr(tau)) == pytest.approx(bridge.snr(tau - 1), rel=1e-14)
    assert bridge.sigma(2) / (float(1 / (orig_get_timestep_snr(2) + 1))) == pytest.approx(2.0)


@pytest.mark.parametrize("tau,tau_next", PAIRS)
def test_p_q_kl_match_the_original(tau, tau_next):
    x0, x = data()
    noisy = x  # any VP state
    eps = orig_predict_noise(fake_velocity, noisy, tau, fixed=True)
    snr, snr_next = orig_get_timestep_snr(tau, True), orig_get_timestep_snr(tau_next, True)
    p_mu, p_std = orig_P(noisy, eps, snr, snr_next)
    q_mu = orig_Q(noisy, x0, snr, snr_next)

    # (the original forms t = 1 - float32(tau/1000) in float32, we round 1 - tau/1000 once:
    # the network times may differ by an ulp, hence 1e-6)
    x0_hat = bridge.predict_x0(fake_velocity, noisy, tau)
    assert torch.allclose(bridge.noise_from_x0(noisy, x0_hat, tau), eps, rtol=1e-6, atol=1e-6)
    post = bridge.posterior(tau, tau_next)
    mean_p, std = bridge.P(noisy, x0_hat, post)
    assert std == pytest.approx(float(p_std), rel=1e-9)
    assert torch.allclose(mean_p, p_mu, rtol=1e-6, atol=1e-6)
    assert torch.allclose(bridge.Q(noisy, x0, post), q_mu, rtol=1e-9, atol=1e-9)
    mu = bridge.normalised_shift(x0, x0_hat, post)
    assert torch.allclose(mu, ((q_mu - p_mu) / p_std).flatten(), rtol=1e-5, atol=1e-5)
    assert bridge.kl_bits(mu) == pytest.approx(orig_dkl(q_mu, p_mu, p_std), rel=1e-5)


def test_first_step_from_pure_noise():
    """At tau = 1000 (abar = 0) the original's eps parametrisation divides 0 by 0 (it only
    survives because of B8); in x0 terms P is the limit: mean sqrt(abar') x0_hat, std
    sqrt(1 - abar'), no dependence on x."""
    post = bridge.posterior(1000, 972)
    ab_n = bridge.alpha_bar(972)
    assert post.c_xt == 0 and post.c_x0 == pytest.approx(math.sqrt(ab_n), rel=1e-15) and post.std == pytest.approx(math.sqrt(1 - ab_n), rel=1e-15)
    x0, x = data(3)
    x0_hat = bridge.predict_x0(fake_velocity, x, 1000)
    assert torch.equal(x0_hat, x + fake_velocity(x, torch.tensor(0.0)))  # x_flow = x_vp, sigma = 1
    # the original's own first step uses the SNR of tau 999 (B8): its std is within 1e-3
    eps = orig_predict_noise(fake_velocity, x, 1000)
    _, p_std = orig_P(x, eps, orig_get_timestep_snr(1000), orig_get_timestep_snr(972))
    assert float(p_std) == pytest.approx(post.std, rel=1e-3)


@pytest.mark.parametrize("tau,tau_next", [(981, 961), (101, 81), (21, 10), (5, 0)])
def test_ddim_step_matches_the_original(tau, tau_next):
    x0, x = data(1)
    eps = orig_predict_noise(fake_velocity, x, tau, fixed=True)
    want = orig_ddim(x, eps, orig_get_timestep_snr(tau, True), orig_get_timestep_snr(tau_next, True))
    got = bridge.ddim_step(x, bridge.predict_x0(fake_velocity, x, tau), tau, tau_next)
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-9)


def test_perfect_predictor_makes_p_equal_q():
    """A model that knows x0 (its velocity is x0 - eps): P = Q, KL = 0 (up to rounding), and
    the DDIM finish returns x0 from any tau."""
    x0, eps = data(2)
    for tau, tau_next in PAIRS:
        s = bridge.sigma(tau)
        x_vp = math.sqrt(bridge.alpha_bar(tau)) * x0 + math.sqrt(1 - bridge.alpha_bar(tau)) * eps

        def perfect(x_flow, t):
            return (x0 - x_flow) / (1 - t.double())  # = x0 - eps exactly in real arithmetic

        x0_hat = bridge.predict_x0(perfect, x_vp, tau)
        post = bridge.posterior(tau, tau_next)
        assert torch.equal(bridge.P(x_vp, x0, post)[0], bridge.Q(x_vp, x0, post))
        assert torch.allclose(bridge.P(x_vp, x0_hat, post)[0], bridge.Q(x_vp, x0, post), rtol=0, atol=1e-7)
        assert bridge.kl_bits(bridge.normalised_shift(x0, x0, post)) == 0.0
        assert bridge.kl_bits(bridge.normalised_shift(x0.float(), x0_hat.float(), post)) < 1e-6 * x0.numel()
        out = bridge.ddim_finish(perfect, x_vp, tau)
        assert torch.allclose(out, x0, atol=1e-6) and s > 0  # t reaches the network as float32


def test_posterior_is_the_ddpm_posterior():
    """Sampling x_tau from q(x_tau | x0), then x_next from the posterior, gives the marginal
    q(x_next | x0): mean sqrt(abar') x0 and variance 1 - abar'."""
    for tau, tau_next in PAIRS:
        post = bridge.posterior(tau, tau_next)
        ab, ab_n = bridge.alpha_bar(tau), bridge.alpha_bar(tau_next)
        assert post.c_x0 + post.c_xt * math.sqrt(ab) == pytest.approx(math.sqrt(ab_n), rel=1e-12)
        assert post.c_xt**2 * (1 - ab) + post.std**2 == pytest.approx(1 - ab_n, rel=1e-12)


def test_schedules():
    assert len(bridge.PIXEL_ENCODING_TIMESTEPS) == 142 and bridge.PIXEL_ENCODING_TIMESTEPS[::141] == (972, 20)
    assert len(bridge.LATENT_ENCODING_TIMESTEPS) == 160 and bridge.LATENT_ENCODING_TIMESTEPS[-1] == 2
    assert len(bridge.DENOISING_TIMESTEPS) == 52 and bridge.DENOISING_TIMESTEPS[:2] == (981, 961) and bridge.DENOISING_TIMESTEPS[-4:] == (21, 10, 5, 0)
    for bad in [(), (5, 5), (10, 20), (1000, 5), (5, 0)]:
        with pytest.raises(ValueError):
            bridge.check_schedule(bad)
    with pytest.raises(ValueError):
        bridge.check_schedule((10, 5), finish=True)
    with pytest.raises(ValueError):
        bridge.posterior(20, 20)
