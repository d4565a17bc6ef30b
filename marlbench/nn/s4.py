"""Structured state space (S4) layer with a convolutional view for training and an exactly
matching recurrent view for acting.

Continuous SSM per channel h (H channels, state size N):

    x'(t) = A x(t) + B u(t),    y(t) = C x(t) + D u(t)

**NPLR kernel** (Gu et al. 2022, "Efficiently Modeling Long Sequences with Structured State
Spaces"). HiPPO-LegS A is normal plus low rank: A = V (Λ - P̃ P̃*) V*. We work in the eigenbasis
with N/2 conjugate pairs (the other half is implied, so the system stays real),
Re(Λ) = -max(exp(θ), 1e-4) < 0 by construction, and bilinear discretisation with step Δ:

    Ā = (I - Δ/2 A)^-1 (I + Δ/2 A),    B̄ = (I - Δ/2 A)^-1 Δ B,    K_l = C Ā^l B̄  (l < L)

The length-L kernel's generating function at the roots of unity ω_k = exp(-2πik/L) is

    K̂(ω) = C̃ (I - Ā ω)^-1 B̄ = k̂00 - k̂01 k̂10 q / (1 + k̂11 q),   q = (1 + ω) / 2
    k̂ab(ω) = Σ_n a_n b_n r̂_n(ω),   r̂_n(ω) = 2 / ((2/Δ)(1 - ω) - Λ_n (1 + ω))

(Woodbury for the rank-1 term; the 2/(1+ω) factor is folded into r̂ so ω = -1 needs no
special case), with (a, b) ∈ {(C̃, B), (C̃, P̃), (P̃*, B), (P̃*, P̃)} summed over both halves of
each conjugate pair. C̃ = C (I - Ā^L) is what is trained (as in S4), so the Cauchy matrix r̂ is
built once per forward and all four terms, for every output channel, come from one einsum.
K = irfft(K̂); y = K * u by FFT of length 2L (no wrap-around) plus the D skip.

**S4D kernel** (Gupta et al. 2022; Gu et al. 2022 "On the parameterization... of diagonal
state space models"): A = Λ (the NPLR's Λ, P dropped), zero-order hold Ā = exp(ΔΛ),
B̄ = (Ā - 1)/Λ B, K_l = 2 Re Σ_n C_n B̄_n Ā_n^l (Vandermonde); cheaper, for comparisons.

**Recurrent view** (O(N) per step and channel, independent of t). NPLR: bilinear step of
A = Λ - P P* applied through the Woodbury identity, so one step is the diagonal α x plus two
rank-1 corrections (`SSMKernel.step_params` has the algebra); the state is the N/2 modes of
one half of each conjugate pair (the other half is their conjugate, so y = 2 Re(c x) is
real). The readout C = C̃ (I - Ā^L)^-1 needs Ā^L, formed densely in float64 once after each
parameter change (a setup cost, as in S4's `setup_step`, never per step). S4D: x_t =
exp(ΔΛ) x_{t-1} + B̄ u_t. The dense real Ā (`SSMKernel.recurrence`, `S4Layer.dense_step`)
remains only as the reference the O(N) step is tested and benchmarked against.

**Parameter names** (what `SSMKernel.named_parameters()` yields; e.g. to freeze A):
state matrix A = Λ - P P*: `log_neg_re` (Re Λ = -exp(.)), `im` (Im Λ) and `P` (NPLR only);
step size Δ: `log_dt`; input matrix B: `B`; output matrix C̃ (C for S4D): `C`; the skip D is
`S4Layer.D`. `SSMKernel.state_matrix_parameters()` returns the A group,
`ssm_parameters()` A, Δ and B (their own lr, no weight decay).

**Channels.** A layer may expose extra readouts of the same state: each SSM channel h gets
`channels` rows C_{c,h}; readout 0 (+ D u) is the layer output, readouts 1.. (no D) are linear
functions of the state x_t, exact in both views. MADS4 uses one such readout as the message.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from marlbench.nn.norm import CausalBatchNorm

KernelMode = Literal["nplr", "s4d"]
MIN_DECAY = 1e-4  # |Re Λ| floor


def hippo_legs_nplr(N: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Λ [N/2], P̃ [N/2], B̃ [N/2]) complex128: HiPPO-LegS as normal - rank-1, diagonalised.

    A_nk = -sqrt(2n+1) sqrt(2k+1) (n > k), -(n+1) (n = k), 0 (n < k);  B_n = sqrt(2n+1);
    P_n = sqrt(n + 1/2). A + P P^T = -I/2 + T with T skew-symmetric, so it is normal.
    """
    n = np.arange(N, dtype=np.float64)
    r = np.sqrt(2 * n + 1)
    A = -np.tril(np.outer(r, r), -1) - np.diag(n + 1)
    P = np.sqrt(n + 0.5)
    B = r.copy()
    S = A + np.outer(P, P)
    T = S + 0.5 * np.eye(N)  # skew part
    mu, V = np.linalg.eigh(1j * T)  # i T is Hermitian; eigenvalues of T are -i mu
    lam = -0.5 - 1j * mu
    keep = np.argsort(lam.imag)[N // 2:]  # one of each conjugate pair (positive imaginary)
    lam, V = lam[keep], V[:, keep]
    return lam, V.conj().T @ P, V.conj().T @ B


def _cplx(x: torch.Tensor) -> torch.Tensor:
    return torch.view_as_complex(x)


class StepMatrices(NamedTuple):
    """Coefficients of the O(N) recurrent step (`SSMKernel.step_params` has the algebra)."""

    alpha: torch.Tensor  # [H, N/2] complex: the diagonal
    alpha_r: torch.Tensor  # [H, N/2, 2]: the same as (Re, Im) pairs, for compiled graphs
    S: torch.Tensor | None  # [H, 2, N]: rows P, P ᾱ of the rank-1 reads (None: S4D)
    V: torch.Tensor  # [H, 3, N]: rows v1, v3, vu of the update (S4D: [H, 1, N], γ)
    C: torch.Tensor  # [H, c, N]: readouts y = C x_t


class SSMKernel(nn.Module):
    """Kernels K [channels, H, l_max] of H independent SSMs of state size N."""

    def __init__(self, d_model: int, d_state: int, l_max: int, channels: int = 1,
                 mode: KernelMode = "nplr", n_ssm: int = 1, dt_min: float = 1e-3,
                 dt_max: float = 1e-1):
        super().__init__()
        if d_state <= 0 or d_state % 2:
            raise ValueError(f"S4 state size N must be even and positive (conjugate pairs), "
                             f"got {d_state}")
        if d_model <= 0 or l_max <= 0 or channels <= 0:
            raise ValueError(f"S4 sizes must be positive (H={d_model}, L={l_max}, "
                             f"channels={channels})")
        if mode not in ("nplr", "s4d"):
            raise ValueError(f"kernel must be 'nplr' or 's4d', got {mode!r}")
        if n_ssm <= 0 or d_model % n_ssm:
            raise ValueError(f"n_ssm ({n_ssm}) must divide the channel count H ({d_model})")
        self.H, self.N, self.L, self.channels, self.mode = d_model, d_state, l_max, channels, mode
        lam, p, b = hippo_legs_nplr(d_state)
        # n_ssm independent (Λ, P, B) sets, each shared by H / n_ssm channels (as in S4);
        # every channel keeps its own Δ and C.
        rep = lambda v: torch.from_numpy(np.stack([v] * n_ssm)).to(torch.complex64)  # noqa
        log_dt = torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = nn.Parameter(log_dt)
        lam_t = rep(lam)
        self.log_neg_re = nn.Parameter(torch.log(-lam_t.real))  # Re Λ = -exp(.) < 0 always
        self.im = nn.Parameter(lam_t.imag.clone())
        self.B = nn.Parameter(torch.view_as_real(rep(b)).clone())
        if mode == "nplr":
            self.P = nn.Parameter(torch.view_as_real(rep(p)).clone())
        # S4 initialisation of C (C̃ for NPLR): standard complex normal.
        self.C = nn.Parameter(torch.view_as_real(
            torch.randn(channels, d_model, d_state // 2, dtype=torch.complex64)).clone())

    def ssm_parameters(self) -> list[nn.Parameter]:
        """Parameters of the state dynamics (Δ, Λ, P, B): their own lr, no weight decay."""
        return [p for name, p in self.named_parameters() if name != "C"]

    def state_matrix_parameters(self) -> list[nn.Parameter]:
        """The parameters of A = Λ - P P* alone (`log_neg_re`, `im`, `P`)."""
        return [p for name, p in self.named_parameters() if name in ("log_neg_re", "im", "P")]

    def _per_channel(self, v: torch.Tensor) -> torch.Tensor:
        """[n_ssm, N/2] -> [H, N/2]: each SSM serves a contiguous group of channels."""
        return v.repeat_interleave(self.H // v.shape[0], dim=0)

    def _lambda(self) -> torch.Tensor:
        # Re Λ = -exp(θ), floored away from 0 (as S4 does) so float32 underflow cannot make a
        # mode marginally stable and I - Ā^L singular.
        re = -torch.exp(self.log_neg_re).clamp_min(MIN_DECAY)
        return self._per_channel(torch.complex(re, self.im))

    def _B(self) -> torch.Tensor:
        return self._per_channel(_cplx(self.B))

    def _P(self) -> torch.Tensor:
        return self._per_channel(_cplx(self.P))

    def forward(self) -> torch.Tensor:
        """K [channels, H, L] (float32)."""
        return self._nplr_kernel() if self.mode == "nplr" else self._s4d_kernel()

    def _nplr_kernel(self) -> torch.Tensor:
        L, dev = self.L, self.log_dt.device
        dt = torch.exp(self.log_dt)[:, None, None]  # [H, 1, 1]
        omega = torch.exp(-2j * math.pi * torch.arange(L // 2 + 1, device=dev) / L)  # [K]
        lam = self._lambda()
        lam_full = torch.cat([lam, lam.conj()], -1)[:, :, None]  # [H, N, 1]
        # Cauchy matrix, built once: r̂[h, n, k]
        r = 2.0 / ((2.0 / dt) * (1 - omega) - lam_full * (1 + omega))
        B, P, C = self._B(), self._P(), _cplx(self.C)  # [H, N/2], [c, H, N/2]
        Pc = P.conj()
        rows = torch.cat([C * B, C * P, (Pc * B)[None], (Pc * P)[None]], 0)  # [2c+2, H, N/2]
        rows = torch.cat([rows, rows.conj()], -1)  # both halves of each pair
        k = torch.einsum("vhn,hnk->vhk", rows, r)  # all terms, all channels: one contraction
        c = self.channels
        k00, k01, k10, k11 = k[:c], k[c:2 * c], k[2 * c], k[2 * c + 1]
        q = (1 + omega) / 2
        k_hat = k00 - k01 * (k10 * q / (1 + k11 * q))
        return torch.fft.irfft(k_hat, n=L)

    def _s4d_kernel(self) -> torch.Tensor:
        dt = torch.exp(self.log_dt)[:, None]
        dtl = dt * self._lambda()  # [H, N/2]
        b_bar = (torch.exp(dtl) - 1) / self._lambda() * self._B()
        vander = torch.exp(dtl[:, :, None] * torch.arange(self.L, device=dt.device))  # [H,N/2,L]
        k = torch.einsum("chn,hnl->chl", _cplx(self.C) * b_bar, vander)
        return 2 * k.real

    # -- recurrent view ------------------------------------------------------------------------

    @torch.no_grad()
    def _dense_discrete(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Complex float64 (Ā [H,N,N], B̄ [H,N], C [c,H,N]) over both halves of every pair.

        NPLR: Ā and B̄ by the bilinear rule, Ā^L by repeated squaring, C = C̃ (I - Ā^L)^-1.
        Dense, O(H N^3 log L): only the reference and the once-per-update setup use it.
        """
        dt = torch.exp(self.log_dt.double())
        lam = self._lambda().to(torch.complex128)
        B, C = self._B().to(torch.complex128), _cplx(self.C).to(torch.complex128)
        full = lambda v: torch.cat([v, v.conj()], -1)  # noqa: E731
        eye = torch.eye(self.N, dtype=torch.complex128, device=dt.device)
        if self.mode == "nplr":
            P = full(self._P().to(torch.complex128))
            A = torch.diag_embed(full(lam)) - P[:, :, None] * P.conj()[:, None, :]
            left = eye - dt[:, None, None] / 2 * A
            Abar = torch.linalg.solve(left, eye + dt[:, None, None] / 2 * A)
            Bbar = torch.linalg.solve(left, (dt[:, None] * full(B))[..., None])[..., 0]
            AL = torch.linalg.matrix_power(Abar, self.L)
            # row vector C = C̃ (I - Ā^L)^-1  <=>  (I - Ā^L)^T C^T = C̃^T
            Cfull = torch.linalg.solve((eye - AL).transpose(-1, -2),
                                       full(C)[..., None])[..., 0]
        else:
            dtl = dt[:, None] * lam
            Abar = torch.diag_embed(full(torch.exp(dtl)))
            Bbar = full((torch.exp(dtl) - 1) / lam * B)
            Cfull = full(C)
        return Abar, Bbar, Cfull

    @torch.no_grad()
    def recurrence(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Dense real-coordinate (Ā [H,N,N], B̄ [H,N], C [c,H,N]) reproducing `forward()`'s
        kernel: the O(N^2)-per-step reference the O(N) step (`step_params`) is tested against.
        """
        N2 = self.N // 2
        Abar, Bbar, Cfull = self._dense_discrete()
        # Real coordinates: x_full = M [Re x_half; Im x_half], M = [[I, iI], [I, -iI]].
        I2 = torch.eye(N2, dtype=torch.complex128, device=Abar.device)
        M = torch.cat([torch.cat([I2, 1j * I2], 1), torch.cat([I2, -1j * I2], 1)], 0)
        Minv = torch.linalg.inv(M)
        A_r = (Minv @ Abar @ M).real
        B_r = (Minv @ Bbar[..., None])[..., 0].real
        C_r = (Cfull @ M).real
        return A_r.float(), B_r.float(), C_r.float()

    @torch.no_grad()
    def step_params(self) -> StepMatrices:
        """Coefficients of the O(N) step on the half state x [.., N/2] (complex).

        Bilinear step for A = Λ - p p* (p = [P; P̄] over both halves), through Woodbury:
        with E = (1 - ΔΛ/2)^-1 (diagonal) and r = Δ Re Σ_n |P_n|^2 E_n,

            (I - Δ/2 A)^-1 = E - E p p* E Δ/2 / (1 + r),
            x_t = w - g Re(P^H w),   w = α x_{t-1} - β Re(P^H x_{t-1}) + γ u_t,
            α = E (1 + ΔΛ/2),  β = E Δ P,  γ = E Δ B,  g = E Δ P / (1 + r)

        (p* v = 2 Re P^H v_half for a conjugate-symmetric v). Substituting w,

            x_t = α x_{t-1} + s1 v1 + s3 v3 + u_t vu,
            s1 = Re(P^H x_{t-1}),  s3 = Re((P ᾱ)^H x_{t-1}),
            v1 = g Re(P^H β) - β,  v3 = -g,  vu = γ - g Re(P^H γ),

        and y_t = 2 Re(c x_t) with C_full = C̃ (I - Ā^L)^-1 = [c, c̄] (the dense solve is a
        setup cost, once per parameter change). S4D: x_t = exp(ΔΛ) x_{t-1} + γ u_t, γ = B̄.

        Returned in float32, "real-interleaved" coordinates (a complex vector z [.., N/2] is
        the real [.., N] = view_as_real(z).flatten(-2)):
        (α [H, N/2] complex, S [H, 2, N] rows (P, P ᾱ) giving (s1, s3) = S x_r, or None (S4D),
        V [H, 3, N] rows (v1, v3, vu) (S4D: [H, 1, N] row γ), C_r [H, c, N] with y = C_r x_r),
        as a `StepMatrices`.
        """
        dt = torch.exp(self.log_dt.double())[:, None]  # [H, 1]
        lam = self._lambda().to(torch.complex128)
        B = self._B().to(torch.complex128)
        N2 = self.N // 2
        _, _, Cfull = self._dense_discrete() if self.mode == "nplr" else (None, None, None)
        r = lambda z: torch.view_as_real(z).flatten(-2)  # noqa: E731  complex [.., m] -> [.., 2m]
        if self.mode == "nplr":
            c = Cfull[..., :N2]  # the other half is its conjugate
            P = self._P().to(torch.complex128)
            E = 1.0 / (1.0 - dt * lam / 2)
            alpha = E * (1.0 + dt * lam / 2)
            beta, gamma = E * dt * P, E * dt * B
            rr = (dt[:, 0] * (P.abs() ** 2 * E).sum(-1).real)[:, None]
            g = E * dt * P / (1.0 + rr)
            dot = lambda a, b: (a.conj() * b).sum(-1, keepdim=True).real  # noqa: E731
            V = torch.stack([r(g * dot(P, beta) - beta), r(-g), r(gamma - g * dot(P, gamma))],
                            1)
            S = torch.stack([r(P), r(P * alpha.conj())], 1).float()
        else:
            c = _cplx(self.C).to(torch.complex128)
            alpha = torch.exp(dt * lam)
            V = r((alpha - 1) / lam * B)[:, None]
            S = None
        # y = 2 Re(c x) = Σ 2 Re c Re x - 2 Im c Im x
        C_r = r(2 * c.conj()).transpose(0, 1)  # [H, channels, N]
        alpha = alpha.to(torch.complex64)
        return StepMatrices(alpha, torch.view_as_real(alpha).contiguous(), S,
                            V.float().contiguous(), C_r.float().contiguous())


def _rotate(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """x [..., N/2, 2] (Re, Im of each mode) times α: complex [..., N/2] in eager mode (one
    complex multiply, fewest dispatches), or its (Re, Im) pairs [..., N/2, 2] in compiled
    graphs (Inductor generates no complex code; real arithmetic fuses into the loop)."""
    if alpha.is_complex():
        return torch.view_as_real(torch.view_as_complex(x) * alpha)
    re, im, ar, ai = x[..., 0], x[..., 1], alpha[..., 0], alpha[..., 1]
    return torch.stack([re * ar - im * ai, re * ai + im * ar], -1)


class S4Layer(nn.Module):
    """H-channel S4 layer over [batch, length, H]: y = K * u + D u, plus extra readouts."""

    def __init__(self, d_model: int, d_state: int, l_max: int, channels: int = 1,
                 mode: KernelMode = "nplr", n_ssm: int = 1):
        super().__init__()
        self.kernel = SSMKernel(d_model, d_state, l_max, channels, mode, n_ssm)
        self.D = nn.Parameter(torch.randn(d_model))
        self._step_cache: tuple | None = None

    @property
    def l_max(self) -> int:
        return self.kernel.L

    def kernel_fft(self, length: int, k: torch.Tensor | None = None) -> torch.Tensor:
        """rfft of the kernel for inputs of `length` steps, [channels, H, F]: compute it once
        and pass it as `kf` to every call on that length (e.g. once per agent)."""
        k = self.kernel() if k is None else k
        return torch.fft.rfft(k[..., :length], n=2 * length)

    def forward(self, u: torch.Tensor, k: torch.Tensor | None = None,
                kf: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """u [B, L, H] -> (y [B, L, H], extra readouts [channels-1, B, L, H]).

        Pass `k` (a kernel) or `kf` (`kernel_fft(L)`) to reuse one kernel for several inputs.
        The FFTs run along the last axis of [B, H, L] (time-major transforms of [B, L, H]
        made every call copy to that layout and back: x1.6 slower, forward plus backward).
        """
        L = u.shape[1]
        if L > self.l_max:
            raise ValueError(f"sequence length {L} exceeds the S4 context {self.l_max}")
        kf = self.kernel_fft(L, k) if kf is None else kf
        n = 2 * L
        uf = torch.fft.rfft(u.transpose(1, 2), n=n)  # [B, H, F]
        y = torch.fft.irfft(uf[None] * kf[:, None], n=n)[..., :L].transpose(2, 3)  # [c,B,L,H]
        return y[0] + u * self.D, y[1:]

    # -- recurrent view ------------------------------------------------------------------------

    def step_matrices(self) -> StepMatrices:
        """Cached `SSMKernel.step_params()`; recomputed whenever a kernel parameter changed in
        place or was replaced (the key is each parameter's version counter and storage
        address: no host sync, any device)."""
        key = tuple((p._version, p.data_ptr()) for p in self.kernel._parameters.values())
        if self._step_cache is None or self._step_cache[0] != key:
            self._step_cache = (key, self.kernel.step_params())
        return self._step_cache[1]

    def initial_state(self, batch: int) -> torch.Tensor:
        """Zero state [H, batch, N]: the N/2 complex modes of each channel (one of each
        conjugate pair) as interleaved (Re, Im). Below batch 4 it is laid out as `step` returns
        it there (a transposed [batch, H, N]), so every step sees the same strides (a compiled
        step would otherwise compile twice)."""
        H, N, dev = self.kernel.H, self.kernel.N, self.D.device
        if batch < 4:
            return torch.zeros(batch, H, N, device=dev).transpose(0, 1)
        return torch.zeros(H, batch, N, device=dev)

    def step(self, u: torch.Tensor, state: torch.Tensor, mats: tuple | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One O(N) step: u [B, H], state [H, B, N] -> (y [B, H], extras [c-1, B, H], state).
        `mats`: `step_matrices()`, fetched by the caller (a compiled step takes them as
        inputs; their cache check is host-side work).

        x_t = α x_{t-1} + [s1, s3, u_t] V (diagonal plus rank 1, see `SSMKernel.step_params`),
        y_t = 2 Re(c x_t) (+ D u_t for readout 0). Batch < 4: broadcast products and short
        sums (fewest dispatches). Larger batches: per-channel batched matmuls, and the state
        updated in place when no gradient is recorded and no graph is being compiled (no
        large temporaries per step).
        """
        m = self.step_matrices() if mats is None else mats
        alpha, S, V, C_r = m.alpha, m.S, m.V, m.C
        H, B, N = state.shape
        compiling = torch.compiler.is_compiling()
        a = m.alpha_r if compiling else alpha
        if B < 4:
            x = state.transpose(0, 1)  # [B, H, N]; the same memory at batch 1
            rot = _rotate(x.reshape(B, H, N // 2, 2), a).view(B, H, N)
            if S is None:  # S4D: diagonal only
                x = torch.addcmul(rot, u[..., None], V[:, 0])
            else:
                coef = torch.cat([(x[:, :, None] * S).sum(-1), u[..., None]], -1)  # [B, H, 3]
                x = rot + (coef[..., None] * V).sum(-2)
            out = (x[:, :, None] * C_r).sum(-1)  # [B, H, c]
            return (torch.addcmul(out[..., 0], u, self.D), out[..., 1:].permute(2, 0, 1),
                    x.transpose(0, 1))
        ut = u.t()[:, :, None]  # [H, B, 1]
        coef = ut if S is None else torch.cat([torch.bmm(state, S.transpose(1, 2)), ut], -1)
        if compiling or (torch.is_grad_enabled() and (state.requires_grad or u.requires_grad
                                                      or alpha.requires_grad)):
            rot = _rotate(state.view(H, B, N // 2, 2), a[:, None])
            state = torch.baddbmm(rot.view(H, B, N), coef, V)
        else:  # in place: no large temporaries per step
            torch.view_as_complex(state.view(H, B, N // 2, 2)).mul_(alpha[:, None])
            state.baddbmm_(coef, V)
        out = torch.bmm(state, C_r.transpose(1, 2)).permute(2, 1, 0)  # [c, B, H]
        return torch.addcmul(out[0], u, self.D), out[1:], state

    def dense_step(self, u: torch.Tensor, state: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reference O(N^2) step with the dense real Ā (tests and benches only); its state
        [H, B, N] (start from zeros) is in [Re x_half, Im x_half] coordinates, not `step`'s."""
        A, Bv, C = self.kernel.recurrence()
        state = torch.einsum("hij,hbj->hbi", A, state) + u.t()[..., None] * Bv[:, None]
        out = torch.einsum("chn,hbn->cbh", C, state)
        return out[0] + u * self.D, out[1:], state


class S4Block(nn.Module):
    """Residual block x + Dropout(GELU(Linear(S4(Norm(x))))) (the MADS4 paper, §4.1).

    `norm="layer"` is LayerNorm; `norm="batch"` is causal BatchNorm (marlbench.nn.norm: every
    token normalised by running estimates of the batch statistics from earlier updates, kept
    per `slot`), so no token sees another's inputs in training either. Both are per-token
    affine maps at inference, so the convolutional and recurrent views agree.
    """

    def __init__(self, d_model: int, d_state: int, l_max: int, channels: int = 1,
                 mode: KernelMode = "nplr", norm: Literal["batch", "layer"] = "layer",
                 dropout: float = 0.0, n_ssm: int = 1, slots: int = 1):
        super().__init__()
        self.batch_norm = norm == "batch"
        self.norm = CausalBatchNorm(d_model, slots) if self.batch_norm else nn.LayerNorm(d_model)
        self.s4 = S4Layer(d_model, d_state, l_max, channels, mode, n_ssm)
        self.mix = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def _norm(self, x: torch.Tensor, mask: torch.Tensor | None, slot: int) -> torch.Tensor:
        return self.norm(x, mask, slot) if self.batch_norm else self.norm(x)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                k: torch.Tensor | None = None, slot: int = 0, kf: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, L, H] -> (x' [B, L, H], extra readouts [c-1, B, L, H]); `k` / `kf` as in
        `S4Layer.forward`."""
        y, extra = self.s4(self._norm(x, mask, slot), k, kf)
        return x + self.drop(torch.nn.functional.gelu(self.mix(y))), extra

    def step_params(self) -> tuple:
        """The cached constants of `step`: (BatchNorm's (scale, shift) [slots, H] or None,
        `S4Layer.step_matrices()`). Fetched outside a compiled step: their cache checks read
        version counters, host-side work a graph cannot hold."""
        return (self.norm.affine() if self.batch_norm else None, self.s4.step_matrices())

    def step(self, x: torch.Tensor, state: torch.Tensor, slot: int = 0,
             params: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, H] one step -> (x' [B, H], extras [c-1, B, H], state). Normalisation by the
        running statistics of `slot` (never updated here), as at inference; `params` is
        `step_params()`, fetched here when not given."""
        affine, mats = self.step_params() if params is None else params
        u = (torch.addcmul(affine[1][slot], x, affine[0][slot]) if self.batch_norm
             else self.norm(x))
        y, extra, state = self.s4.step(u, state, mats)
        h = F.gelu(F.linear(y, self.mix.weight, self.mix.bias))
        return x + (self.drop(h) if self.training else h), extra, state
