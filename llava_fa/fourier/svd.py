"""FourierSVD (Algorithm 2): weighted low-rank factors of a complex residual.

``fourier_svd(R, rank, row_scale, col_scale)`` returns ``L1 (m, r)``, ``L2 (r, k)``
minimising ``|| D_row (R - L1 L2) D_col ||_F`` for positive diagonal scales
(Eckart-Young on ``D_row R D_col``, then ``L1 = D_row^-1 U sqrt(S)``,
``L2 = sqrt(S) V^H D_col^-1``). The scales are *amplitude* weights (square
roots of the squared-error weights); ``None`` means ones.

``method="randomized"`` uses a seeded randomized range finder (Halko et al.)
with ``oversample`` extra columns and ``power_iters`` subspace iterations:
same result for the same input and seed, much faster for ``r << min(m, k)``.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch

from .settings import check_field

SvdMethod = Literal["exact", "randomized"]


def fourier_svd(
    residual: torch.Tensor,
    rank: int,
    row_scale: Optional[torch.Tensor] = None,
    col_scale: Optional[torch.Tensor] = None,
    *,
    method: SvdMethod = "exact",
    oversample: int = 8,
    power_iters: int = 2,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-``rank`` complex64 factors ``(L1 (m, r), L2 (r, k))`` of a complex ``(m, k)`` residual."""
    check_field("svd_method", method)
    m, k = residual.shape
    r = residual.to(torch.complex64)
    if rank == 0:
        return r.new_zeros(m, 0), r.new_zeros(0, k)
    if row_scale is not None:
        r = r * row_scale.to(torch.float32).unsqueeze(1)
    if col_scale is not None:
        r = r * col_scale.to(torch.float32).unsqueeze(0)
    if method == "exact" or rank + oversample >= min(m, k):
        u, s, vh = torch.linalg.svd(r, full_matrices=False)
    else:
        u, s, vh = _randomized_svd(r, rank + oversample, power_iters, seed)
    root = s[:rank].sqrt().to(torch.complex64)
    l1 = u[:, :rank] * root.unsqueeze(0)
    l2 = root.unsqueeze(1) * vh[:rank]
    if row_scale is not None:
        l1 = l1 / row_scale.to(torch.float32).unsqueeze(1)
    if col_scale is not None:
        l2 = l2 / col_scale.to(torch.float32).unsqueeze(0)
    return l1, l2


def _randomized_svd(
    a: torch.Tensor, width: int, power_iters: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator(device=a.device).manual_seed(seed)
    probe = torch.randn(a.shape[1], width, generator=generator, device=a.device, dtype=torch.complex64)
    q, _ = torch.linalg.qr(a @ probe)
    for _ in range(power_iters):
        q, _ = torch.linalg.qr(a.mH @ q)
        q, _ = torch.linalg.qr(a @ q)
    u_small, s, vh = torch.linalg.svd(q.mH @ a, full_matrices=False)
    return q @ u_small, s, vh
