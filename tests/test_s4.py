"""S4 layer: the NPLR representation, both views agreeing, parameterisation and caching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from marlbench.nn.s4 import S4Layer, SSMKernel, hippo_legs_nplr


def test_nplr_is_the_hippo_legs_operator():
    N = 16
    lam, p, b = hippo_legs_nplr(N)
    full = lambda v: np.concatenate([v, v.conj()])  # noqa: E731
    A_nplr = np.diag(full(lam)) - np.outer(full(p), full(p).conj())
    n = np.arange(N)
    r = np.sqrt(2 * n + 1)
    A = -np.tril(np.outer(r, r), -1) - np.diag(n + 1)
    # same operator in another basis: same spectrum
    ev = lambda M: np.sort_complex(np.round(np.linalg.eigvals(M), 6))  # noqa: E731
    assert np.allclose(ev(A_nplr), ev(A), atol=1e-4)
    assert np.all(lam.real < 0) and np.all(lam.imag > 0)
    assert np.allclose(np.abs(full(b)) ** 2 @ np.ones(N), r @ r)  # unitary change of basis


@pytest.mark.parametrize("mode", ["nplr", "s4d"])
def test_convolution_matches_recurrence_over_500_steps(mode):
    H, N = 8, 16
    torch.manual_seed(0)
    layer = S4Layer(H, N, l_max=500, channels=2, mode=mode, n_ssm=2)
    u = torch.randn(3, 500, H)
    with torch.no_grad():
        y, extra = layer(u)
        state, ys, es = layer.initial_state(3), [], []
        for t in range(500):
            yt, et, state = layer.step(u[:, t], state)
            ys.append(yt)
            es.append(et)
    assert (torch.stack(ys, 1) - y).abs().max() <= 1e-4
    assert (torch.stack(es, 2) - extra).abs().max() <= 1e-4
    assert y.abs().max() > 0.1  # not trivially zero


def test_nplr_kernel_matches_explicit_powers():
    """K_l = C Ā^l B̄ from dense matrices equals the Cauchy/Woodbury kernel."""
    torch.manual_seed(1)
    k = SSMKernel(4, 8, l_max=64)
    A, B, C = (x.double() for x in k.recurrence())
    x, explicit = B.clone(), []
    for _ in range(64):
        explicit.append(torch.einsum("chn,hn->ch", C, x))
        x = torch.einsum("hij,hj->hi", A, x)
    assert torch.allclose(torch.stack(explicit, -1).float(), k().detach(), atol=1e-4)


def test_real_part_of_lambda_stays_negative_under_any_update():
    k = SSMKernel(4, 8, l_max=32)
    opt = torch.optim.SGD(k.parameters(), lr=100.0)
    (-k._lambda().real.sum()).backward()  # gradient pushing Re Λ up, with a huge step
    opt.step()
    assert torch.all(k._lambda().real <= -1e-4)


def test_step_setup_refreshes_after_parameter_updates():
    torch.manual_seed(2)
    layer = S4Layer(4, 8, l_max=16)
    u = torch.randn(1, 16, 4)
    before = layer.step(u[:, 0], layer.initial_state(1))[0].detach()
    opt = torch.optim.Adam(layer.kernel.ssm_parameters(), lr=0.1)
    layer(u)[0].pow(2).sum().backward()
    opt.step()
    after = layer.step(u[:, 0], layer.initial_state(1))[0].detach()
    assert not torch.allclose(before, after)
    assert torch.allclose(after, layer(u)[0][:, 0].detach(), atol=1e-5)


@pytest.mark.parametrize("kw,match", [
    (dict(d_model=4, d_state=7), "even"), (dict(d_model=0, d_state=8), "positive"),
    (dict(d_model=6, d_state=8, n_ssm=4), "divide")])
def test_invalid_sizes(kw, match):
    with pytest.raises(ValueError, match=match):
        SSMKernel(l_max=8, **kw)


@pytest.mark.parametrize("mode", ["nplr", "s4d"])
def test_float32_step_is_exact_at_the_default_size(mode):
    """H = N = 96 (MADS4's default), 500 steps of unit-variance input: the float32 O(N) step
    against the float64 convolution with the kernel from dense powers of Ā. (The float32
    Cauchy kernel of the convolutional view is itself off by ~1e-5 per tap here, ~1.4e-4 on
    y after 500 taps, so the two float32 views are compared at a smaller size above.)"""
    torch.manual_seed(0)
    layer = S4Layer(96, 96, l_max=500, channels=2, mode=mode, n_ssm=2)
    u = torch.randn(2, 500, 96)
    with torch.no_grad():
        A, B, C = layer.kernel._dense_discrete()
        x, taps = B.clone(), []
        for _ in range(500):
            taps.append(torch.einsum("chn,hn->ch", C, x).real)
            x = torch.einsum("hij,hj->hi", A, x)
        K = torch.stack(taps, -1)  # [c, H, L] float64
        ud = u.double().transpose(1, 2)
        prod = torch.fft.rfft(ud, n=1000)[None] * torch.fft.rfft(K, n=1000)[:, None]
        exact = torch.fft.irfft(prod, n=1000)[..., :500].transpose(-1, -2)
        exact[0] += u.double() * layer.D.double()
        state, ys = layer.initial_state(2), []
        for t in range(500):
            y, extra, state = layer.step(u[:, t], state)
            ys.append(torch.cat([y[None], extra]))
    err = (torch.stack(ys, 2).double() - exact).abs().max().item()
    assert err <= 1e-4, err
    assert exact.abs().max() > 1.0


@pytest.mark.parametrize("mode", ["nplr", "s4d"])
def test_linear_time_step_matches_the_dense_reference_step(mode):
    """The O(N) diagonal-plus-low-rank step against the dense N x N matvec, step by step."""
    torch.manual_seed(3)
    layer = S4Layer(6, 32, l_max=200, channels=2, mode=mode)
    u = torch.randn(2, 200, 6)
    with torch.no_grad():
        fast, dense = layer.initial_state(2), torch.zeros(6, 2, 32)
        worst = 0.0
        for t in range(200):
            yf, ef, fast = layer.step(u[:, t], fast)
            yd, ed, dense = layer.dense_step(u[:, t], dense)
            worst = max(worst, (yf - yd).abs().max().item(), (ef - ed).abs().max().item())
    assert worst <= 1e-4
    assert yd.abs().max() > 0.1


def _step_sizes(N: int) -> tuple[int, int]:
    """(entries of every coefficient the step reads, of its state) at state size N."""
    layer = S4Layer(16, N, l_max=64, channels=2)
    m = layer.step_matrices()
    coefficients = [m.alpha, m.alpha_r, m.S, m.V, m.C]
    assert all(t.shape[1 if t is m.alpha_r else -1] in (N // 2, N) for t in coefficients)
    return sum(t.numel() for t in coefficients), layer.initial_state(4).numel()


def test_step_work_is_linear_in_the_state_size():
    """4x the state, 4x the coefficients and state the step touches (a dense Ā: 16x)."""
    (coef_s, state_s), (coef_l, state_l) = _step_sizes(32), _step_sizes(128)
    assert coef_l == 4 * coef_s
    assert state_l == 4 * state_s


def test_state_matrix_parameters_are_lambda_and_p():
    k = SSMKernel(4, 8, l_max=16, mode="nplr")
    names = {n for n, p in k.named_parameters()
             if any(p is q for q in k.state_matrix_parameters())}
    assert names == {"log_neg_re", "im", "P"}
    assert {n for n, _ in k.named_parameters()} - names == {"log_dt", "B", "C"}
    assert "C" not in {n for n, p in k.named_parameters()
                       if any(p is q for q in k.ssm_parameters())}


@pytest.mark.parametrize("mode", ["nplr", "s4d"])
def test_batched_step_equals_one_row_at_a_time(mode):
    """Batch 1 and larger batches take different product routes through the step."""
    torch.manual_seed(4)
    layer = S4Layer(8, 16, l_max=100, channels=2, mode=mode)
    u = torch.randn(6, 100, 8)
    with torch.no_grad():
        together, alone, worst = layer.initial_state(6), [layer.initial_state(1)] * 6, 0.0
        assert not together.requires_grad  # the in-place route of larger batches
        for t in range(100):
            y, e, together = layer.step(u[:, t], together)
            for b in range(6):
                yb, eb, alone[b] = layer.step(u[b:b + 1, t], alone[b])
                worst = max(worst, (yb - y[b:b + 1]).abs().max().item(),
                            (eb - e[:, b:b + 1]).abs().max().item())
    assert worst <= 1e-5
