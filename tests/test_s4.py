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
    torch.manual_seed(0)
    layer = S4Layer(8, 16, l_max=500, channels=2, mode=mode, n_ssm=2)
    u = torch.randn(3, 500, 8)
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
