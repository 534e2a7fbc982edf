"""Spatial-domain baselines for the approximation benchmark (plain torch, plus HQQ if installed).

Each baseline maps a real ``(m, n)`` weight to ``(w_hat, stored_bits)`` and
counts every stored bit: codes, scales/zeros in float16, low-rank factors in
float16. Groups run along the input dimension (``group`` consecutive entries
of a row), as in RTN/HQQ/bitsandbytes.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

#: QLoRA's NormalFloat-4 levels.
NF4_LEVELS = torch.tensor(
    [-1.0, -0.6961928, -0.5250730, -0.3949175, -0.2844414, -0.1848449, -0.0910500, 0.0,
     0.0795803, 0.1609302, 0.2461123, 0.3379152, 0.4407098, 0.5626170, 0.7229568, 1.0]
)

Quantizer = Callable[[torch.Tensor], tuple[torch.Tensor, int]]


def _grouped(w: torch.Tensor, group: int) -> torch.Tensor:
    if w.numel() % group:
        raise ValueError(f"group={group} must divide the weight's {w.numel()} entries")
    return w.reshape(-1, group)


def rtn(w: torch.Tensor, bits: int = 4, group: int = 64) -> tuple[torch.Tensor, int]:
    """Asymmetric round-to-nearest with float16 scale and zero per group."""
    g = _grouped(w.float(), group)
    lo, hi = g.amin(1, keepdim=True), g.amax(1, keepdim=True)
    scale = ((hi - lo) / (2**bits - 1)).clamp_min(1e-12).half().float()
    zero = torch.round(-lo / scale).clamp(0, 2**bits - 1)
    q = torch.clamp(torch.round(g / scale) + zero, 0, 2**bits - 1)
    w_hat = ((q - zero) * scale).reshape(w.shape)
    return w_hat, w.numel() * bits + g.shape[0] * 32


def nf4(w: torch.Tensor, group: int = 64) -> tuple[torch.Tensor, int]:
    """NF4 with a float16 absmax scale per group (QLoRA's data type)."""
    g = _grouped(w.float(), group)
    scale = g.abs().amax(1, keepdim=True).clamp_min(1e-12).half().float()
    levels = NF4_LEVELS.to(w.device)
    idx = (g / scale).unsqueeze(-1).sub(levels).abs().argmin(-1)
    w_hat = (levels[idx] * scale).reshape(w.shape)
    return w_hat, w.numel() * 4 + g.shape[0] * 16


def hqq(w: torch.Tensor, bits: int = 4, group: int = 64) -> Optional[tuple[torch.Tensor, int]]:
    """HQQ (half-quadratic, calibration-free) with float16 scale and zero; ``None`` if hqq is missing."""
    try:
        from hqq.core.quantize import Quantizer as HQQQuantizer
    except ImportError:
        return None
    w_q, meta = HQQQuantizer.quantize(
        w.float(), nbits=bits, group_size=group, optimize=True, round_zero=False, axis=1,
        device=str(w.device), compute_dtype=torch.float16,
    )
    w_hat = HQQQuantizer.dequantize(w_q, meta).reshape(w.shape).float()
    return w_hat, w.numel() * bits + (w.numel() // group) * 32


def loftq(w: torch.Tensor, quantize: Quantizer, rank: int, iters: int = 5) -> tuple[torch.Tensor, int]:
    """LoftQ-style alternation ``W ~= Q + A B`` (real rank ``rank``, float16 factors), best iterate kept."""
    w = w.float()
    low = torch.zeros_like(w)
    best: Optional[tuple[float, torch.Tensor, int]] = None
    for _ in range(iters if rank else 1):
        q, q_bits = quantize(w - low)
        if rank:
            u, s, vh = torch.linalg.svd(w - q, full_matrices=False)
            a = (u[:, :rank] * s[:rank].sqrt()).half().float()
            b = (s[:rank].sqrt().unsqueeze(1) * vh[:rank]).half().float()
            low = a @ b
        w_hat = q + low
        err = float((w - w_hat).norm())
        if best is not None and err > best[0]:
            break
        best = (err, w_hat, q_bits + rank * (w.shape[0] + w.shape[1]) * 16)
    assert best is not None
    return best[1], best[2]


def spatial_pairs(w: torch.Tensor, codebook: str = "vq", amplitude_bits: int = 3, phase_bits: int = 5,
                  group: int = 64) -> tuple[torch.Tensor, int]:
    """Control for the Fourier transform: our exact PolarQuant/VQ quantiser on *spatial* pairs.

    Adjacent weights ``(w[:, 2j], w[:, 2j+1])`` form one complex number, quantised with the same
    codebook, bits and group size as the Fourier path, but without any transform. Whatever the
    Fourier path gains over this row comes from the transform, not from the codebook.
    """
    from llava_fa.fourier import polar_quantize

    w = w.float()
    if w.shape[1] % 2:
        raise ValueError("spatial_pairs needs an even number of input features")
    z = torch.complex(w[:, 0::2].contiguous(), w[:, 1::2].contiguous())
    codes = polar_quantize(z, amplitude_bits, phase_bits, group_size=group, codebook=codebook, phase_aware=True)
    z_hat = codes.dequantize()
    w_hat = torch.stack([z_hat.real, z_hat.imag], dim=-1).reshape(w.shape)
    return w_hat, codes.nbits()


def gptq(w: torch.Tensor, sigma: torch.Tensor, bits: int = 4, group: int = 128, damp: float = 0.01,
         block: int = 128, act_order: bool = False) -> tuple[torch.Tensor, int]:
    """GPTQ (Frantar et al. 2022): asymmetric ``bits``-bit RTN grid, float16 scale and zero per ``group``.

    Columns are rounded one at a time and each rounding error is moved onto the not-yet-rounded
    columns through the upper Cholesky factor of ``H^-1`` (``H = sigma + damp * mean(diag) I``,
    ``sigma = E[x x^T]`` of the calibration inputs), with lazy block updates. Without ``act_order``
    group scales are fitted on the updated weights when a group starts (the reference default);
    with it columns go by decreasing ``diag(H)`` and scales come from the original groups.
    """
    w = w.float()
    m, n = w.shape
    if n % group:
        raise ValueError(f"group={group} must divide in_features={n}")
    levels = 2**bits - 1
    work = w.clone()
    h = sigma.float().clone()
    dead = torch.diagonal(h) <= 0
    h[dead, dead] = 1.0
    work[:, dead] = 0.0
    perm = torch.argsort(torch.diagonal(h), descending=True) if act_order else torch.arange(n, device=h.device)
    perm_list = perm.tolist()
    work, h = work[:, perm], h[perm][:, perm]
    torch.diagonal(h).add_(damp * float(torch.diagonal(h).mean()))
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)

    def fit(cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = cols.amin(1), cols.amax(1)
        scale = ((hi - lo) / levels).clamp_min(1e-12).half().float()
        return scale, torch.round(-lo / scale).clamp(0, levels)

    static = None
    if act_order:
        static = [fit(w[:, g : g + group]) for g in range(0, n, group)]
    q_all = torch.zeros_like(work)
    scale = zero = None
    for start in range(0, n, block):
        stop = min(start + block, n)
        blk = work[:, start:stop].clone()
        errs = torch.zeros_like(blk)
        for j in range(stop - start):
            col = start + j
            if static is not None:
                scale, zero = static[perm_list[col] // group]
            elif col % group == 0:
                scale, zero = fit(work[:, col : col + group] if j == 0 else
                                  torch.cat([blk[:, j:], work[:, stop:]], 1)[:, :group])
            q = (torch.clamp(torch.round(blk[:, j] / scale) + zero, 0, levels) - zero) * scale
            q_all[:, col] = q
            err = (blk[:, j] - q) / u[col, col]
            blk[:, j + 1 :] -= err.unsqueeze(1) * u[col, col + 1 : stop].unsqueeze(0)
            errs[:, j] = err
        work[:, stop:] -= errs @ u[start:stop, stop:]
    w_hat = torch.empty_like(q_all)
    w_hat[:, perm] = q_all
    return w_hat, w.numel() * bits + (w.numel() // group) * 32


def with_channel_scale(quantize: Quantizer, scale: torch.Tensor) -> Quantizer:
    """Activation-aware wrapper: quantise ``W diag(d)``, return ``W_hat = Q diag(1/d)`` (+16 bits per channel)."""

    def run(w: torch.Tensor) -> tuple[torch.Tensor, int]:
        w_hat, bits = quantize(w * scale.unsqueeze(0))
        return w_hat / scale.unsqueeze(0), bits + scale.numel() * 16

    return run
