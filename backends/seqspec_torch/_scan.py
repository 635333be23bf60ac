"""Recurrences with a hand-written backward pass: the fast path of the cells torch has no kernel for.

A recurrent layer run as a Python loop under autograd records a dozen nodes a step, and its
backward replays them one by one. Here the loop runs as one `torch.autograd.Function` per layer:

- the input part of every gate is projected for all steps at once outside it (`xp`, [B, T, G*u],
  bias and input dropout included, so autograd differentiates that part as usual);
- the forward pass runs the steps without recording anything and keeps the activated gates;
- the backward pass walks the steps in reverse, one fused elementwise step and one matmul each,
  and computes the recurrent weight gradients afterwards as one matmul over all steps
  (dW = sum_t dz(t)^T h(t-1)), the peephole gradients as one reduction.

The cells are those of `_cells.py` with their default activations (tanh and sigmoid) and no
recurrent dropout; everything else takes the plain loop, which is also the reference that
tests/test_torch_scan.py compares this path with, in float64, outputs and every gradient.

On CUDA each step (its matmul and elementwise ops) is compiled with `torch.compile` (a matmul
and one fused kernel instead of about ten kernels), which makes a sequence a few kernels a step: put the model under a CUDA graph
(`torch.cuda.make_graphed_callables`) and the launches go too; benchmarks/bench_gpu.py measures
it. On the CPU they stay eager: a compiled call costs more there than the ops it fuses.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Callable

import torch

# Compile the steps on CUDA devices (see the module docstring), with this torch.compile mode:
# None is the default (cuBLAS matmuls, the elementwise ops fused into one kernel);
# "max-autotune-no-cudagraphs" also tries Triton matmuls with the elementwise ops fused into
# them, at minutes of autotuning on the first call (`benchmarks/bench_gpu.py --autotune`; no
# figure yet, see docs/performance.md).
COMPILE_ON_CUDA = True
COMPILE_MODE = None

_compiled: dict = {}


@functools.lru_cache(maxsize=None)
def _has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


def _kernel(fn: Callable, device: torch.device) -> Callable:
    """fn itself, or on CUDA with Triton installed its torch.compile'd form (compiled once per
    function and mode; without Triton, torch.compile cannot build CUDA kernels)."""
    if device.type != "cuda" or not COMPILE_ON_CUDA or not _has_triton():
        return fn
    key = (fn, COMPILE_MODE)
    compiled = _compiled.get(key)
    if compiled is None:
        # Not fullgraph: past dynamo's recompile limit (new batch sizes, dtypes, layers) a step
        # falls back to eager, same values, instead of failing.
        compiled = _compiled[key] = torch.compile(fn, mode=COMPILE_MODE)
    return compiled


def _shifted(seq: torch.Tensor) -> torch.Tensor:
    """[T, B, n] -> the same one step later: row t holds seq[t - 1], row 0 zeros."""
    return torch.cat([torch.zeros_like(seq[:1]), seq[:-1]])


def _time_major(seq: torch.Tensor) -> torch.Tensor:
    """[B, T, n] -> [T, B, n], contiguous: every step's slice is one block of memory."""
    return seq.transpose(0, 1).contiguous()


def _flat(seq: torch.Tensor) -> torch.Tensor:
    return seq.reshape(-1, seq.shape[-1])


def _save(ctx, hs: list, kept: list, *tensors) -> torch.Tensor:
    """Stack a forward pass's outputs (h of each step) and kept gates (a tuple a step) time-major,
    save `tensors`, the outputs and each kept sequence for the backward pass; return the outputs."""
    out = torch.stack(hs)
    ctx.save_for_backward(*tensors, out, *(torch.stack(s) for s in zip(*kept)))
    return out


# Each recurrence below: a forward step (its matmul and elementwise ops; compiled on CUDA), a
# Function whose forward keeps the gates of every step, and whose backward first turns them, for
# all steps at once, into the factors each step's gradient is multiplied by (everything that does
# not depend on the gradient coming back), so that a step back is a few multiplications and one
# matmul. (The matmul for h(-1) = 0, at the last step back, is computed and not used.)


# --- peephole LSTM: gates i, f, g, o; i and f see c(t-1), o sees c(t) --------------------------


def _peephole_step(xp_t, h, w_t, c, p_if, p_o):
    """xp_t [B, 4u] the input part of the gates; h, c = h(t-1), c(t-1) -> h, c, [i f], g, o, tanh(c)."""
    z = (xp_t + h @ w_t).view(c.shape[0], 4, -1)
    i_f = torch.sigmoid(torch.addcmul(z[:, :2], p_if, c.unsqueeze(1)))
    g = torch.tanh(z[:, 2])
    c = torch.addcmul(i_f[:, 1] * c, i_f[:, 0], g)
    o = torch.sigmoid(torch.addcmul(z[:, 3], p_o, c))
    tc = torch.tanh(c)
    return o * tc, c, i_f, g, o, tc


def _peephole_back(d_out, dh_rec, dc, k_o, k_c, k_ifg, k_prev, weight_hh):
    """One step back: the gradients of h(t) (two parts) and c(t) -> dz(t) [B, 4, u], dc(t-1), and
    the gradient h(t-1) gets through the recurrent matmul."""
    dh = d_out + dh_rec
    dc = torch.addcmul(dc, dh, k_c)
    dz = torch.cat([dc.unsqueeze(1) * k_ifg, (dh * k_o).unsqueeze(1)], 1)
    return dz, dc * k_prev, dz.view(dh.shape[0], -1) @ weight_hh


def _peephole_scan(xp, weight_hh, p_i, p_f, p_o, keep: bool):
    step = _kernel(_peephole_step, xp.device)
    w_t, p_if = weight_hh.t(), torch.stack([p_i, p_f])
    h = xp.new_zeros(xp.shape[1], weight_hh.shape[1])
    c = torch.zeros_like(h)  # not h itself: a compiled step would recompile for the aliasing
    hs, kept = [], []
    for t in range(xp.shape[0]):
        h, c, *gates = step(xp[t], h, w_t, c, p_if, p_o)
        hs.append(h)
        if keep:
            kept.append((c, *gates))
    return hs, kept


class _PeepholeScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp, weight_hh, p_i, p_f, p_o):
        return _save(ctx, *_peephole_scan(xp, weight_hh, p_i, p_f, p_o, keep=True), weight_hh, p_i, p_f, p_o)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_out):
        d_out = d_out.contiguous()
        weight_hh, p_i, p_f, p_o, out, c, i_f, g, o, tc = ctx.saved_tensors
        (steps, b, u), c_prev = out.shape, _shifted(c)
        i, f = i_f[:, :, 0], i_f[:, :, 1]
        k_o = tc * o * (1 - o)  # dz_o = dh * k_o
        k_c = torch.addcmul(o * (1 - tc * tc), k_o, p_o)  # dc(t) += dh * k_c
        k_ifg = torch.stack([g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g)], 2)  # dz_ifg = dc * k_ifg
        k_prev = f + k_ifg[:, :, 0] * p_i + k_ifg[:, :, 1] * p_f  # dc(t-1) = dc(t) * k_prev
        back = _kernel(_peephole_back, out.device)
        dh_rec, dc = torch.zeros_like(out[0]), torch.zeros_like(out[0])
        dzs = [None] * steps
        for t in reversed(range(steps)):
            dzs[t], dc, dh_rec = back(d_out[t], dh_rec, dc, k_o[t], k_c[t], k_ifg[t], k_prev[t], weight_hh)
        dz = torch.stack(dzs)  # [T, B, 4, u]
        d_weight = dz.view(-1, 4 * u).t() @ _flat(_shifted(out))
        d_p_if = (dz[:, :, :2] * c_prev.unsqueeze(2)).sum((0, 1))
        d_p_o = (dz[:, :, 3] * c).sum((0, 1))
        return dz.view(steps, b, 4 * u), d_weight, d_p_if[0], d_p_if[1], d_p_o


def peephole_lstm(xp: torch.Tensor, weight_hh: torch.Tensor, p_i, p_f, p_o) -> torch.Tensor:
    """Peephole LSTM (tanh, sigmoid) over xp [B, T, 4u] (gates i, f, g, o) -> h [B, T, u]."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (xp, weight_hh, p_i, p_f, p_o)):
        return _PeepholeScan.apply(_time_major(xp), weight_hh, p_i, p_f, p_o).transpose(0, 1)
    return torch.stack(_peephole_scan(xp.transpose(0, 1), weight_hh, p_i, p_f, p_o, keep=False)[0], 1)


# --- GRU, reset after the recurrent matmul (Keras's default, torch's nn.GRU) ------------------
# Gates r, z, n; n = tanh(xn + r * (h U_n + b_hn)); h(t) = z * h(t-1) + (1 - z) * n.


def _gru_after_step(xp_t, h, w_t, bias_hh):
    """xp_t [B, 3u] the input part of the gates, h = h(t-1) -> h(t), the recurrent part hp, [r z], n."""
    u = h.shape[1]
    hp = h @ w_t if bias_hh is None else torch.addmm(bias_hh, h, w_t)
    rz = torch.sigmoid(xp_t[:, : 2 * u] + hp[:, : 2 * u])
    n = torch.tanh(torch.addcmul(xp_t[:, 2 * u :], rz[:, :u], hp[:, 2 * u :]))
    return torch.lerp(n, h, rz[:, u:]), hp, rz, n


def _gru_after_back(d_out, dh_rec, k, z, weight_hh):
    """One step back -> the gradient of h(t), of hp(t) [B, 3, u], and of h(t-1)."""
    dh = d_out + dh_rec
    dhp = dh.unsqueeze(1) * k
    return dh, dhp, torch.addmm(dh * z, dhp.view(dh.shape[0], -1), weight_hh)


def _gru_after_scan(xp, weight_hh, bias_hh, keep: bool):
    step = _kernel(_gru_after_step, xp.device)
    w_t = weight_hh.t()
    h = xp.new_zeros(xp.shape[1], weight_hh.shape[1])
    hs, kept = [], []
    for t in range(xp.shape[0]):
        h, hp, rz, n = step(xp[t], h, w_t, bias_hh)
        hs.append(h)
        if keep:
            kept.append((hp, rz, n))
    return hs, kept


class _GRUAfterScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp, weight_hh, bias_hh):
        ctx.has_bias = bias_hh is not None
        return _save(ctx, *_gru_after_scan(xp, weight_hh, bias_hh, keep=True), weight_hh)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_out):
        d_out = d_out.contiguous()
        weight_hh, out, hp, rz, n = ctx.saved_tensors
        (steps, b, u), h_prev = out.shape, _shifted(out)
        r, z = rz[:, :, :u], rz[:, :, u:]
        a_n = (1 - z) * (1 - n * n)  # d of n's pre-activation = dh * a_n
        a_z = (h_prev - n) * z * (1 - z)
        a_r = a_n * hp[:, :, 2 * u :] * r * (1 - r)
        k = torch.stack([a_r, a_z, a_n * r], 2)  # d hp = dh * k
        back = _kernel(_gru_after_back, out.device)
        dh_rec = torch.zeros_like(out[0])
        dhs, dhps = [None] * steps, [None] * steps
        for t in reversed(range(steps)):
            dhs[t], dhps[t], dh_rec = back(d_out[t], dh_rec, k[t], z[t], weight_hh)
        dh = torch.stack(dhs).unsqueeze(2)
        dhp = torch.stack(dhps).view(steps, b, 3 * u)
        d_xp = torch.cat([dh * k[:, :, :2], dh * a_n.unsqueeze(2)], 2).view(steps, b, 3 * u)
        d_weight = _flat(dhp).t() @ _flat(h_prev)
        return d_xp, d_weight, dhp.sum((0, 1)) if ctx.has_bias else None


def gru_reset_after(xp: torch.Tensor, weight_hh: torch.Tensor, bias_hh) -> torch.Tensor:
    """GRU (tanh, sigmoid, reset after) over xp [B, T, 3u] (gates r, z, n) -> h [B, T, u]."""
    params = (xp, weight_hh) if bias_hh is None else (xp, weight_hh, bias_hh)
    if torch.is_grad_enabled() and any(t.requires_grad for t in params):
        return _GRUAfterScan.apply(_time_major(xp), weight_hh, bias_hh).transpose(0, 1)
    return torch.stack(_gru_after_scan(xp.transpose(0, 1), weight_hh, bias_hh, keep=False)[0], 1)


# --- GRU, reset before the recurrent matmul (reset_after: false, the textbook form) -----------
# n = tanh(xn + (r * h) U_n); the bias, one vector, is in xp.


def _gru_before_gates(xp_t, h, w_rz):
    """The input part of the gates [B, 3u], h = h(t-1) -> [r z], r * h(t-1)."""
    u = h.shape[1]
    rz = torch.sigmoid(xp_t[:, : 2 * u] + h @ w_rz)
    return rz, rz[:, :u] * h


def _gru_before_update(xp_t, rh, w_n, rz, h):
    """The input part of the gates, r * h(t-1) -> h(t), n."""
    u = h.shape[1]
    n = torch.tanh(xp_t[:, 2 * u :] + rh @ w_n)
    return torch.lerp(n, h, rz[:, u:]), n


def _gru_before_back_n(d_out, dh_rec, a_n):
    dh = d_out + dh_rec
    return dh, dh * a_n


def _gru_before_back_r(dh, dan, w_n, a_rz, rz, w_rz):
    """-> d of [r z]'s pre-activations and the gradient of h(t-1)."""
    u = dh.shape[1]
    d_rh = dan @ w_n  # d(r * h(t-1))
    drz = torch.cat([d_rh, dh], 1) * a_rz
    return drz, torch.addmm(torch.addcmul(dh * rz[:, u:], d_rh, rz[:, :u]), drz, w_rz)


def _gru_before_scan(xp, weight_hh, keep: bool):
    u = weight_hh.shape[1]
    gates, update = _kernel(_gru_before_gates, xp.device), _kernel(_gru_before_update, xp.device)
    w_rz, w_n = weight_hh[: 2 * u].t(), weight_hh[2 * u :].t()
    h = xp.new_zeros(xp.shape[1], u)
    hs, kept = [], []
    for t in range(xp.shape[0]):
        xp_t = xp[t]
        rz, rh = gates(xp_t, h, w_rz)
        h, n = update(xp_t, rh, w_n, rz, h)
        hs.append(h)
        if keep:
            kept.append((rz, rh, n))
    return hs, kept


class _GRUBeforeScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xp, weight_hh):
        return _save(ctx, *_gru_before_scan(xp, weight_hh, keep=True), weight_hh)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_out):
        d_out = d_out.contiguous()
        weight_hh, out, rz, rh, n = ctx.saved_tensors
        (steps, b, u), h_prev = out.shape, _shifted(out)
        r, z = rz[:, :, :u], rz[:, :, u:]
        w_rz, w_n = weight_hh[: 2 * u], weight_hh[2 * u :]
        a_n = (1 - z) * (1 - n * n)  # d of n's pre-activation = dh * a_n
        a_rz = torch.cat([h_prev * r * (1 - r), (h_prev - n) * z * (1 - z)], 2)  # times [d_rh, dh]
        back_n, back_r = _kernel(_gru_before_back_n, out.device), _kernel(_gru_before_back_r, out.device)
        dh_rec = torch.zeros_like(out[0])
        dans, drzs = [None] * steps, [None] * steps
        for t in reversed(range(steps)):
            dh, dans[t] = back_n(d_out[t], dh_rec, a_n[t])
            drzs[t], dh_rec = back_r(dh, dans[t], w_n, a_rz[t], rz[t], w_rz)
        dan, drz = torch.stack(dans), torch.stack(drzs)
        d_weight = torch.cat([_flat(drz).t() @ _flat(h_prev), _flat(dan).t() @ _flat(rh)], 0)
        return torch.cat([drz, dan], 2), d_weight


def gru_reset_before(xp: torch.Tensor, weight_hh: torch.Tensor) -> torch.Tensor:
    """GRU (tanh, sigmoid, reset before) over xp [B, T, 3u] (gates r, z, n) -> h [B, T, u]."""
    if torch.is_grad_enabled() and (xp.requires_grad or weight_hh.requires_grad):
        return _GRUBeforeScan.apply(_time_major(xp), weight_hh).transpose(0, 1)
    return torch.stack(_gru_before_scan(xp.transpose(0, 1), weight_hh, keep=False)[0], 1)
