"""Triton kernels over 8-bit FourierLinear codes; they read the rfft output of the input directly.

``y = x' W'^T (+ t C^T) (+ bias)`` where (see ``spectral``) ``x'`` is the interleaved, weighted, packed
spectrum of ``u = x / d``, ``W'[o, 2k:2k+2] = table[code[o, k]] * scale[group(o, k)]``, ``t`` the
``(M, 2r)`` low-rank projection of the input and ``C`` the ``(out, 2r)`` real form of ``L1``.

* ``_lut_gemv_kernel`` (batch <= ``GEMV_MAX_BATCH``): CUDA-core GEMV, fp32 products, optionally split over
  the complex columns (``SPLIT`` partial sums + ``_splitk_reduce_kernel``); autotuned over tile shape,
  split, the lookup (joint 2^(a+p) table or separable amplitude level x unit phasor) and the accumulation
  style. The input tile is read straight from ``view_as_real(rfft(u))`` (rfft weights and DC/Nyquist
  packing applied on load); low-rank term, bias and output cast form the epilogue.
* ``_lut_dequant_kernel`` (batch >= ``DEQUANT_MIN_BATCH``): writes ``W'`` planar (``[Re | Im]``,
  ``(out, 2 n_cols)``) in the compute dtype once per call; cuBLAS does the product.
* ``_lut_gemm_kernel``: tensor-core LUT GEMM (dequantised tiles fed to ``tl.dot``); used for float32
  outputs above the GEMV batch, and when ``DEQUANT_MIN_BATCH`` is None. Half-precision dots take bfloat16
  operands (the spectrum of an fp16 input can exceed the fp16 range); under the interpreter they take
  float16, because Triton 3.6's interpreter multiplies bfloat16 bit patterns as integers.
* ``_prep_kernel`` (batch <= ``PREP_MAX_BATCH``, inputs <= ``PREP_MAX_IN``): ``u = x / d`` and ``t = x A^T``
  in one launch before the rfft.

``triton`` is optional: without it ``TRITON_AVAILABLE`` is False and the launchers raise ``RuntimeError``.
Set ``TRITON_INTERPRET=1`` before importing triton to run the kernels on CPU tensors (tests).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch

from ..fourier.transform import spectrum_columns
from .spectral import planar_input

try:  # optional dependency: CPU-only machines may lack it
    import triton
    import triton.language as tl

    TRITON_AVAILABLE = True
except ImportError:  # pragma: no cover - exercised where triton is absent
    triton = None
    tl = None
    TRITON_AVAILABLE = False

#: Batch rows up to which `lut_linear` uses the CUDA-core GEMV kernel.
GEMV_MAX_BATCH = 4
#: Batch rows up to which `spectral_prep` (one Triton launch for x / d and the low-rank projection) replaces
#: the elementwise divide + cuBLAS projection.
PREP_MAX_BATCH = 16
#: Inputs up to which `spectral_prep` is used (its per-program loop over a long input is slower than cuBLAS).
PREP_MAX_IN = 4096
#: Autotune block shapes per (batch bucket, layer shape) on CUDA; ``LLAVA_FA_AUTOTUNE=0`` uses fixed defaults
#: (tests: far fewer compilations).
AUTOTUNE = os.environ.get("LLAVA_FA_AUTOTUNE", "1") != "0"
#: Batch rows at or above which `lut_linear` dequantises W' once and calls cuBLAS (None: never).
DEQUANT_MIN_BATCH: Optional[int] = 5


def interpreting() -> bool:
    """True when Triton runs its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _patch_interpreter_index() -> None:
    """Let the interpreter use runtime ints as loop bounds under NumPy >= 2 (Triton <= 3.6 calls ``int()``
    on a one-element array there, which NumPy 2 rejects). Only touches the interpreter, only when interpreting."""
    try:
        from triton.runtime import interpreter
    except ImportError:  # pragma: no cover
        return
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_llava_fa_patched", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._llava_fa_patched = True
    interpreter._patch_lang_tensor = patched


def pack_table(lut: torch.Tensor) -> torch.Tensor:
    """Int32 ``(2^bits,)`` table: entry ``c`` holds fp16 ``Re`` (low 16 bits) and fp16 ``Im`` (high 16 bits)."""
    halves = torch.view_as_real(lut.to(torch.complex64)).to(torch.float16).contiguous()  # (T, 2)
    return halves.view(torch.int32).reshape(-1).contiguous()


def _bucket(m: int) -> int:
    return 16 if m <= 16 else 64 if m <= 64 else 256 if m <= 256 else 1024


if TRITON_AVAILABLE and interpreting():
    _patch_interpreter_index()

if TRITON_AVAILABLE:

    @triton.jit
    def _lookup(code, table_ptr, levels_ptr, TABLE_F32: tl.constexpr, POLAR: tl.constexpr, PHASE_BITS: tl.constexpr):
        # (Re, Im) float32 of int32 codes. POLAR: level[code >> PHASE_BITS] * phasor[code & mask], two gathers
        # that each touch one or two cache lines (the 2^a levels and the 2^p unit phasors); otherwise one gather
        # in the joint 2^(a+p) table (up to 8 cache lines per warp request).
        if POLAR:
            idx = code & ((1 << PHASE_BITS) - 1)
        else:
            idx = code
        if TABLE_F32:
            wre = tl.load(table_ptr + 2 * idx)
            wim = tl.load(table_ptr + 2 * idx + 1)
        else:
            pair = tl.load(table_ptr + idx)
            wre = (pair & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
            wim = (pair >> 16).to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
        if POLAR:
            lev = tl.load(levels_ptr + (code >> PHASE_BITS))
            wre = wre * lev
            wim = wim * lev
        return wre, wim

    @triton.jit
    def _output_tile(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """Rows and output features of this program's (BLOCK_M, BLOCK_N) tile (grid axes 0 and 1) and their masks."""
        rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        return rm, rn, rm < M, rn < N

    @triton.jit
    def _load_nyquist(x_ptr, rm, stride_xm, nyq_col, mask_m, HAS_NYQ: tl.constexpr, BLOCK_M: tl.constexpr):
        """Per row, the real Nyquist coefficient of the input (even n; zeros otherwise)."""
        if HAS_NYQ:
            nyq = tl.load(x_ptr + rm.to(tl.int64) * stride_xm + 2 * nyq_col, mask=mask_m, other=0.0)
        else:
            nyq = tl.zeros((BLOCK_M,), dtype=tl.float32)
        return nyq

    @triton.jit
    def _load_weighted_input(x_rows, rk, mask_m, mask_k, nyq):
        """(Re, Im) tiles of the interleaved input spectrum with the half-spectrum weights: column 0 holds DC
        (weight 1) and the Nyquist coefficient in its imaginary slot (packed layout); others count twice."""
        xm = mask_m[:, None] & mask_k[None, :]
        xre = tl.load(x_rows + 2 * rk[None, :], mask=xm, other=0.0)
        xim = tl.load(x_rows + 2 * rk[None, :] + 1, mask=xm, other=0.0)
        first = (rk == 0)[None, :]
        xre = tl.where(first, xre, 2.0 * xre)
        xim = tl.where(first, nyq[:, None], 2.0 * xim)
        return xre, xim

    @triton.jit
    def _load_lowrank_tiles(rm, rn, mask_m, mask_n, t_ptr, stride_tm, c_ptr, R2: tl.constexpr, R2P: tl.constexpr):
        """The rows' low-rank projections t (BLOCK_M, R2P) and the outputs' real factor rows c (BLOCK_N, R2P)."""
        rr = tl.arange(0, R2P)
        mask_r = rr < R2
        tt = tl.load(t_ptr + rm.to(tl.int64)[:, None] * stride_tm + rr[None, :],
                     mask=mask_m[:, None] & mask_r[None, :], other=0.0)
        cc = tl.load(c_ptr + rn.to(tl.int64)[:, None] * R2 + rr[None, :],
                     mask=mask_n[:, None] & mask_r[None, :], other=0.0)
        return tt, cc

    @triton.jit
    def _lowrank_bias_store(acc, rm, rn, mask_m, mask_n, t_ptr, stride_tm, c_ptr, bias_ptr, y_ptr, stride_ym,
                            HAS_LR: tl.constexpr, R2: tl.constexpr, R2P: tl.constexpr, HAS_BIAS: tl.constexpr):
        # epilogue of the CUDA-core kernels: + t C^T (fp32), + bias, cast, store
        if HAS_LR:
            tt, cc = _load_lowrank_tiles(rm, rn, mask_m, mask_n, t_ptr, stride_tm, c_ptr, R2, R2P)
            acc += tl.sum(tt[:, None, :] * cc[None, :, :], axis=2)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rn, mask=mask_n, other=0.0).to(tl.float32)[None, :]
        dst = y_ptr + rm.to(tl.int64)[:, None] * stride_ym + rn[None, :]
        tl.store(dst, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])

    @triton.jit
    def _lut_gemv_kernel(x_ptr, stride_xm, codes_ptr, table_ptr, joint_ptr, levels_ptr, scales_ptr, t_ptr, stride_tm, c_ptr,
                         bias_ptr, y_ptr, stride_ym, p_ptr, M, N, n_cols, nyq_col, M_BUCKET,
                         group_len: tl.constexpr, HAS_NYQ: tl.constexpr, TABLE_F32: tl.constexpr,
                         POLAR: tl.constexpr, PHASE_BITS: tl.constexpr, HAS_LR: tl.constexpr, R2: tl.constexpr,
                         R2P: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                         BLOCK_K: tl.constexpr, SPLIT: tl.constexpr, SEP: tl.constexpr, ACC3D: tl.constexpr):
        # CUDA-core GEMV for a few rows, split over K: program (m, n, s) covers the s-th of SPLIT column ranges;
        # with SPLIT > 1 it writes fp32 partials to p (SPLIT, M, N) for _splitk_reduce_kernel. SEP: separable
        # polar lookup (levels x phasors) instead of the joint table; ACC3D: accumulate products in a
        # (BLOCK_M, BLOCK_N, BLOCK_K) register tile reduced once at the end (else reduced every step).
        pid_s = tl.program_id(2)
        rm, rn, mask_m, mask_n = _output_tile(M, N, BLOCK_M, BLOCK_N)
        x_rows = x_ptr + rm.to(tl.int64)[:, None] * stride_xm
        w_rows = rn[:, None] * n_cols
        nyq = _load_nyquist(x_ptr, rm, stride_xm, nyq_col, mask_m, HAS_NYQ, BLOCK_M)
        span = tl.cdiv(tl.cdiv(n_cols, SPLIT), BLOCK_K) * BLOCK_K
        k_start = pid_s * span
        k_end = tl.minimum(k_start + span, n_cols)
        if ACC3D:
            acc3 = tl.zeros((BLOCK_M, BLOCK_N, BLOCK_K), dtype=tl.float32)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(k_start, k_end, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            mask_k = rk < k_end
            xre, xim = _load_weighted_input(x_rows, rk, mask_m, mask_k, nyq)
            wm = mask_n[:, None] & mask_k[None, :]
            code = tl.load(codes_ptr + w_rows + rk[None, :], mask=wm, other=0).to(tl.int32)
            if SEP:
                wre, wim = _lookup(code, table_ptr, levels_ptr, TABLE_F32, True, PHASE_BITS)
            else:
                wre, wim = _lookup(code, joint_ptr, levels_ptr, TABLE_F32, False, PHASE_BITS)
            sc = tl.load(scales_ptr + (w_rows + rk[None, :]) // group_len, mask=wm, other=0.0).to(tl.float32)
            prod = xre[:, None, :] * (wre * sc)[None, :, :] + xim[:, None, :] * (wim * sc)[None, :, :]
            if ACC3D:
                acc3 += prod
            else:
                acc += tl.sum(prod, axis=2)
        if ACC3D:
            acc = tl.sum(acc3, axis=2)
        if SPLIT == 1:
            _lowrank_bias_store(acc, rm, rn, mask_m, mask_n, t_ptr, stride_tm, c_ptr, bias_ptr, y_ptr, stride_ym,
                                HAS_LR, R2, R2P, HAS_BIAS)
        else:
            part = p_ptr + (pid_s * M + rm.to(tl.int64))[:, None] * N + rn[None, :]
            tl.store(part, acc, mask=mask_m[:, None] & mask_n[None, :])

    @triton.jit
    def _splitk_reduce_kernel(p_ptr, t_ptr, stride_tm, c_ptr, bias_ptr, y_ptr, stride_ym, M, N,
                              SPLIT: tl.constexpr, HAS_LR: tl.constexpr, R2: tl.constexpr, R2P: tl.constexpr,
                              HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        rm, rn, mask_m, mask_n = _output_tile(M, N, BLOCK_M, BLOCK_N)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for s in tl.static_range(SPLIT):
            acc += tl.load(p_ptr + (s * M + rm.to(tl.int64))[:, None] * N + rn[None, :],
                           mask=mask_m[:, None] & mask_n[None, :], other=0.0)
        _lowrank_bias_store(acc, rm, rn, mask_m, mask_n, t_ptr, stride_tm, c_ptr, bias_ptr, y_ptr, stride_ym,
                            HAS_LR, R2, R2P, HAS_BIAS)

    @triton.jit
    def _lut_gemm_kernel(x_ptr, stride_xm, codes_ptr, table_ptr, levels_ptr, scales_ptr, t_ptr, stride_tm, c_ptr, bias_ptr,
                         y_ptr, stride_ym, M, N, n_cols, nyq_col, M_BUCKET,
                         group_len: tl.constexpr, HAS_NYQ: tl.constexpr, TABLE_F32: tl.constexpr, POLAR: tl.constexpr,
                         PHASE_BITS: tl.constexpr, ALIGNED: tl.constexpr,
                         HAS_LR: tl.constexpr, R2: tl.constexpr, R2P: tl.constexpr, HAS_BIAS: tl.constexpr,
                         DOT_F32: tl.constexpr, HALF: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                         BLOCK_K: tl.constexpr):
        rm, rn, mask_m, mask_n = _output_tile(M, N, BLOCK_M, BLOCK_N)
        x_rows = x_ptr + rm.to(tl.int64)[:, None] * stride_xm
        w_rows = rn.to(tl.int64)[:, None] * n_cols
        nyq = _load_nyquist(x_ptr, rm, stride_xm, nyq_col, mask_m, HAS_NYQ, BLOCK_M)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, n_cols, BLOCK_K):
            rk = k0 + tl.arange(0, BLOCK_K)
            mask_k = rk < n_cols
            xre, xim = _load_weighted_input(x_rows, rk, mask_m, mask_k, nyq)
            wm = mask_n[:, None] & mask_k[None, :]
            code = tl.load(codes_ptr + w_rows + rk[None, :], mask=wm, other=0).to(tl.int32)
            wre, wim = _lookup(code, table_ptr, levels_ptr, TABLE_F32, POLAR, PHASE_BITS)
            if not ALIGNED:
                sc = tl.load(scales_ptr + (w_rows + rk[None, :]) // group_len, mask=wm, other=0.0).to(tl.float32)
                wre = wre * sc
                wim = wim * sc
            if DOT_F32:
                part = tl.dot(xre, tl.trans(wre), input_precision="ieee")
                part = tl.dot(xim, tl.trans(wim), part, input_precision="ieee")
            else:
                part = tl.dot(xre.to(HALF), tl.trans(wre.to(HALF)))
                part = tl.dot(xim.to(HALF), tl.trans(wim.to(HALF)), part)
            if ALIGNED:
                sg = tl.load(scales_ptr + (rn.to(tl.int64) * n_cols + k0) // group_len, mask=mask_n,
                             other=0.0).to(tl.float32)
                acc += part * sg[None, :]
            else:
                acc += part
        if HAS_LR:
            tt, cc = _load_lowrank_tiles(rm, rn, mask_m, mask_n, t_ptr, stride_tm, c_ptr, R2, R2P)
            acc = tl.dot(tt, tl.trans(cc), acc, input_precision="ieee")
        if HAS_BIAS:
            acc += tl.load(bias_ptr + rn, mask=mask_n, other=0.0).to(tl.float32)[None, :]
        out = y_ptr + rm.to(tl.int64)[:, None] * stride_ym + rn[None, :]
        tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])

    @triton.jit
    def _lut_dequant_kernel(codes_ptr, table_ptr, levels_ptr, scales_ptr, w_ptr, N, n_cols, group_len: tl.constexpr,
                            POLAR: tl.constexpr, PHASE_BITS: tl.constexpr, BLOCK_N: tl.constexpr,
                            BLOCK_K: tl.constexpr):
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
        wm = (rn < N)[:, None] & (rk < n_cols)[None, :]
        idx = rn[:, None] * n_cols + rk[None, :]
        code = tl.load(codes_ptr + idx, mask=wm, other=0).to(tl.int32)
        wre, wim = _lookup(code, table_ptr, levels_ptr, False, POLAR, PHASE_BITS)
        sc = tl.load(scales_ptr + idx // group_len, mask=wm, other=0.0).to(tl.float32)
        row = w_ptr + rn.to(tl.int64)[:, None] * (2 * n_cols) + rk[None, :]
        tl.store(row, (wre * sc).to(w_ptr.dtype.element_ty), mask=wm)
        tl.store(row + n_cols, (wim * sc).to(w_ptr.dtype.element_ty), mask=wm)

    def _configs() -> list:
        out = []
        for bm, bn, warps, stages in [(16, 16, 4, 3), (16, 32, 4, 3), (16, 64, 4, 3), (16, 32, 4, 4),
                                      (16, 64, 8, 3), (32, 32, 4, 3), (32, 64, 4, 3), (64, 64, 4, 3),
                                      (64, 64, 8, 3), (64, 128, 8, 3), (128, 64, 8, 3), (128, 128, 8, 3),
                                      (128, 128, 8, 4), (64, 128, 4, 4)]:
            out.append(triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages))
        return out

    def _prune(configs, named_args, **kwargs):
        bucket = named_args["M_BUCKET"]
        keep = [c for c in configs if (c.kwargs["BLOCK_M"] == 16 if bucket <= 16 else
                                        c.kwargs["BLOCK_M"] in (16, 32, 64) if bucket <= 64 else
                                        c.kwargs["BLOCK_M"] >= 64)]
        return keep or configs[:1]

    @triton.jit
    def _prep_kernel(x_ptr, stride_xm, inv_ptr, a_ptr, u_ptr, t_ptr, n, R2, UNIT: tl.constexpr,
                     HAS_LR: tl.constexpr, RB: tl.constexpr, BLOCK: tl.constexpr):
        # One launch before the rfft: u = x / d (float32) and t = A x (RB rows of the low-rank projection per
        # program; program column 0 also writes u).
        m = tl.program_id(0)
        j = tl.program_id(1)
        rr = j * RB + tl.arange(0, RB)
        mask_r = rr < R2
        acc = tl.zeros((RB, BLOCK), dtype=tl.float32)
        for k0 in range(0, n, BLOCK):
            offs = k0 + tl.arange(0, BLOCK)
            mask = offs < n
            xv = tl.load(x_ptr + m.to(tl.int64) * stride_xm + offs, mask=mask, other=0.0).to(tl.float32)
            if j == 0:
                if UNIT:
                    uv = xv
                else:
                    uv = xv * tl.load(inv_ptr + offs, mask=mask, other=0.0)
                tl.store(u_ptr + m.to(tl.int64) * n + offs, uv, mask=mask)
            if HAS_LR:
                a = tl.load(a_ptr + rr.to(tl.int64)[:, None] * n + offs[None, :],
                            mask=mask_r[:, None] & mask[None, :], other=0.0)
                acc += a * xv[None, :]
        if HAS_LR:
            tl.store(t_ptr + m.to(tl.int64) * R2 + rr, tl.sum(acc, axis=1), mask=mask_r)

    def _gemv_configs() -> list:
        out = []
        for bn, bk, warps, split, sep, acc3d in [
                (16, 128, 4, 1, False, True), (32, 64, 4, 1, False, True), (8, 256, 4, 1, False, True),
                (32, 128, 8, 1, False, True), (16, 128, 4, 1, True, True), (32, 64, 4, 1, True, True),
                (16, 256, 4, 4, True, False), (32, 256, 8, 4, True, False), (16, 256, 4, 4, False, False),
                (32, 128, 4, 8, False, False)]:
            out.append(triton.Config({"BLOCK_N": bn, "BLOCK_K": bk, "SPLIT": split, "SEP": sep, "ACC3D": acc3d},
                                     num_warps=warps, num_stages=2))
        return out

    def _gemv_prune(configs, named_args, **kwargs):
        bm = kwargs.get("BLOCK_M", named_args.get("BLOCK_M", 1))
        polar = kwargs.get("POLAR", named_args.get("POLAR", False))
        keep = [c for c in configs
                if bm * c.kwargs["BLOCK_N"] * c.kwargs["BLOCK_K"] <= (64 if c.kwargs["ACC3D"] else 128) * 32 * c.num_warps
                and (polar or not c.kwargs["SEP"])]
        return keep or [c for c in configs if not c.kwargs["SEP"]][:1]

    _lut_gemv_tuned = triton.autotune(configs=_gemv_configs(), key=["M_BUCKET", "N", "n_cols", "HAS_LR", "TABLE_F32"],
                                      prune_configs_by={"early_config_prune": _gemv_prune})(_lut_gemv_kernel)

    _lut_gemm_tuned = triton.autotune(configs=_configs(), key=["M_BUCKET", "N", "n_cols", "HAS_LR", "DOT_F32"],
                                      prune_configs_by={"early_config_prune": _prune})(_lut_gemm_kernel)


_GEMV_DEFAULT = {"BLOCK_N": 16, "BLOCK_K": 128, "SPLIT": 1, "SEP": False, "ACC3D": True, "num_warps": 4,
                 "num_stages": 2}
#: Largest SPLIT of the GEMV configs (size of the partial-sum buffer).
_MAX_SPLIT = 8
_GEMM_F32_DEFAULT = {"BLOCK_M": 32, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2}
_GEMM_DEFAULT = {16: {"BLOCK_M": 16, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},
                 64: {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},
                 256: {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3},
                 1024: {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8, "num_stages": 3}}


def _block_k(n_cols: int, group_len: int) -> tuple[int, bool]:
    """(BLOCK_K, aligned): aligned when every row holds whole groups and a group is one K step."""
    if group_len in (16, 32, 64, 128) and n_cols % group_len == 0:
        return group_len, True
    return 64, False


@dataclass(frozen=True)
class LutTables:
    """What the kernels look codes up in (build with :func:`lut_tables`).

    Polar codebooks (no VQ table): ``levels`` float32 ``(2^a,)`` and the ``2^p`` unit phasors, as float32
    pairs ``phasor_f32`` ``(2^p, 2)`` and fp16 pairs packed in int32 ``phasor_packed`` ``(2^p,)``; a code
    ``c`` is ``levels[c >> p] * phasor[c & (2^p - 1)]``. VQ: ``levels`` is None and the phasor tensors hold
    the joint ``2^(a+p)`` table. ``phase_bits`` is ``p`` (0 for VQ). ``joint_f32`` / ``joint_packed`` always hold
    the joint table (the GEMV can use either lookup).
    """

    table_f32: torch.Tensor
    table_packed: torch.Tensor
    levels: Optional[torch.Tensor]
    phase_bits: int
    joint_f32: torch.Tensor
    joint_packed: torch.Tensor

    @property
    def polar(self) -> bool:
        return self.levels is not None


def lut_tables(levels: Optional[torch.Tensor], phasors: Optional[torch.Tensor], joint: Optional[torch.Tensor],
               phase_bits: int) -> LutTables:
    """`LutTables` from float amplitude ``levels`` + complex unit ``phasors`` ``(2^p,)`` (polar codebooks), or
    from the complex ``joint`` ``(2^(a+p),)`` table (VQ)."""
    if levels is not None:
        joint = (levels.float().unsqueeze(1) * phasors.to(torch.complex64).unsqueeze(0)).reshape(-1)
        return LutTables(table_f32=torch.view_as_real(phasors.to(torch.complex64)).contiguous(),
                         table_packed=pack_table(phasors), levels=levels.float().contiguous(), phase_bits=phase_bits,
                         joint_f32=torch.view_as_real(joint).contiguous(), joint_packed=pack_table(joint))
    table_f32 = torch.view_as_real(joint.to(torch.complex64)).contiguous()
    packed = pack_table(joint)
    return LutTables(table_f32=table_f32, table_packed=packed, levels=None, phase_bits=0, joint_f32=table_f32,
                     joint_packed=packed)


def lut_linear(uv: torch.Tensor, n: int, codes: torch.Tensor, scales: torch.Tensor, tables: LutTables,
               group_len: int, out_features: int, *, t: Optional[torch.Tensor] = None,
               lr_out: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None,
               out_dtype: torch.dtype = torch.bfloat16, config: Optional[dict] = None) -> torch.Tensor:
    """``(M, out_features)`` in ``out_dtype`` from ``uv = view_as_real(rfft(x / d))`` float32 ``(M, n // 2 + 1, 2)``.

    ``codes`` uint8 one byte per coefficient; ``tables`` from :func:`lut_tables` (float32 entries for float32
    outputs, fp16 entries otherwise); ``t`` float32 ``(M, 2r)`` and ``lr_out`` float32 ``(out, 2r)`` the
    low-rank term (both or neither); ``bias`` ``(out,)``. ``config`` skips autotuning (always used under
    the interpreter): ``BLOCK_N``, ``BLOCK_K`` for the GEMV kernel (``M <= GEMV_MAX_BATCH``), ``BLOCK_M``,
    ``BLOCK_N`` for the GEMM kernel, plus ``num_warps`` / ``num_stages``.
    """
    if not TRITON_AVAILABLE:
        raise RuntimeError("lut_linear needs the `triton` package (pip install triton)")
    if uv.dtype != torch.float32 or uv.dim() != 3 or uv.shape[-1] != 2 or uv.shape[1] != n // 2 + 1:
        raise ValueError(f"lut_linear: uv must be float32 (M, {n // 2 + 1}, 2), got {tuple(uv.shape)} {uv.dtype}")
    if codes.dtype != torch.uint8:
        raise TypeError(f"lut_linear: codes must be uint8 (8-bit codes), got {codes.dtype}")
    if (t is None) != (lr_out is None):
        raise ValueError("lut_linear: pass both t and lr_out, or neither")
    m_rows = uv.shape[0]
    n_cols = spectrum_columns(n, "rfft")
    if codes.numel() < out_features * n_cols:
        raise ValueError(f"lut_linear: {codes.numel()} codes cannot hold {out_features} x {n_cols} coefficients")
    if codes.numel() >= 2**31:
        raise ValueError(f"lut_linear: {codes.numel()} codes exceed the kernels' int32 indexing; split the layer")
    y = torch.empty(m_rows, out_features, device=uv.device, dtype=out_dtype)
    if m_rows == 0 or out_features == 0:
        return y
    uv = uv.contiguous() if uv.stride(-1) != 1 or uv.stride(-2) != 2 else uv
    dot_f32 = out_dtype == torch.float32
    if DEQUANT_MIN_BATCH is not None and m_rows >= DEQUANT_MIN_BATCH and not dot_f32:
        return _dequant_linear(uv, n, n_cols, codes, scales, tables, group_len, out_features, t, lr_out, bias,
                               out_dtype)
    table = tables.table_f32 if dot_f32 else tables.table_packed
    joint = tables.joint_f32 if dot_f32 else tables.joint_packed
    levels = tables.levels if tables.polar else table
    r2 = 0 if t is None else t.shape[1]
    has_lr = r2 > 0
    t_arg = t.contiguous() if has_lr else y
    c_arg = lr_out.contiguous() if has_lr else y
    bias_arg = bias if bias is not None else y
    args = (uv, uv.stride(0), codes, table, levels, scales, t_arg, t_arg.stride(0), c_arg, bias_arg, y, y.stride(0),
            m_rows, out_features, n_cols, n // 2, _bucket(m_rows))
    meta = dict(group_len=group_len, HAS_NYQ=n % 2 == 0, TABLE_F32=dot_f32, POLAR=tables.polar,
                PHASE_BITS=tables.phase_bits, HAS_LR=has_lr, R2=max(r2, 1),
                R2P=max(16, triton.next_power_of_2(max(r2, 1))), HAS_BIAS=bias is not None)
    if m_rows <= GEMV_MAX_BATCH:
        bm = triton.next_power_of_2(m_rows)
        partials = torch.empty(_MAX_SPLIT, m_rows, out_features, device=uv.device, dtype=torch.float32)
        # + the joint table, the partial sums; the tuning bucket is the row block itself
        args = args[:4] + (joint,) + args[4:12] + (partials,) + args[12:16] + (bm,)
        if config is None and (interpreting() or not AUTOTUNE):
            config = ({"BLOCK_N": 16, "BLOCK_K": 64, "SPLIT": 2, "SEP": tables.polar, "ACC3D": False}
                      if interpreting() else dict(_GEMV_DEFAULT))
        if config is not None:
            cfg = {"SEP": False, "ACC3D": True, **config}
            cfg["SEP"] = cfg["SEP"] and tables.polar
            bn, split = cfg.pop("BLOCK_N"), cfg.pop("SPLIT", 1)
            grid = (triton.cdiv(m_rows, bm), triton.cdiv(out_features, bn), split)
            _lut_gemv_kernel[grid](*args, **meta, BLOCK_M=bm, BLOCK_N=bn, SPLIT=split, **cfg)
        else:
            grid = lambda c: (triton.cdiv(m_rows, bm), triton.cdiv(out_features, c["BLOCK_N"]), c["SPLIT"])  # noqa: E731
            _lut_gemv_tuned[grid](*args, **meta, BLOCK_M=bm)
            split = _lut_gemv_tuned.best_config.kwargs["SPLIT"]
        if split > 1:
            grid = (triton.cdiv(m_rows, bm), triton.cdiv(out_features, 256))
            _splitk_reduce_kernel[grid](partials, t_arg, t_arg.stride(0), c_arg, bias_arg, y, y.stride(0), m_rows,
                                        out_features, SPLIT=split, HAS_LR=has_lr, R2=meta["R2"], R2P=meta["R2P"],
                                        HAS_BIAS=bias is not None, BLOCK_M=bm, BLOCK_N=256, num_warps=4)
        return y
    block_k, aligned = _block_k(n_cols, group_len)
    meta.update(ALIGNED=aligned, DOT_F32=dot_f32, HALF=tl.float16 if interpreting() else tl.bfloat16, BLOCK_K=block_k)
    if config is None and (interpreting() or not AUTOTUNE or dot_f32):
        config = ({"BLOCK_M": 16, "BLOCK_N": 16} if interpreting() else
                  dict(_GEMM_F32_DEFAULT) if dot_f32 else dict(_GEMM_DEFAULT[_bucket(m_rows)]))
    if config is not None:
        cfg = dict(config)
        bm, bn = cfg.pop("BLOCK_M"), cfg.pop("BLOCK_N")
        grid = (triton.cdiv(m_rows, bm), triton.cdiv(out_features, bn))
        _lut_gemm_kernel[grid](*args, **meta, BLOCK_M=bm, BLOCK_N=bn, **cfg)
    else:
        grid = lambda c: (triton.cdiv(m_rows, c["BLOCK_M"]), triton.cdiv(out_features, c["BLOCK_N"]))  # noqa: E731
        _lut_gemm_tuned[grid](*args, **meta)
    return y


def use_prep_kernel(m_rows: int, n: int) -> bool:
    """Whether `spectral_prep` handles a call of ``m_rows`` rows of ``n`` inputs (``PREP_MAX_BATCH``, ``PREP_MAX_IN``)."""
    return m_rows <= PREP_MAX_BATCH and n <= PREP_MAX_IN


def spectral_prep(x: torch.Tensor, inv_scale: Optional[torch.Tensor], lowrank_a: Optional[torch.Tensor]
                  ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """One launch: ``u = x / d`` float32 ``(M, n)`` (``inv_scale`` = ``1 / d``, None for ``d = 1``) and the low-rank
    projection ``t = x A^T`` float32 ``(M, 2r)`` (``lowrank_a`` ``(2r, n)`` float32, or None)."""
    if not TRITON_AVAILABLE:
        raise RuntimeError("spectral_prep needs the `triton` package (pip install triton)")
    m_rows, n = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    u = torch.empty(m_rows, n, device=x.device, dtype=torch.float32)
    r2 = 0 if lowrank_a is None else lowrank_a.shape[0]
    t = torch.empty(m_rows, r2, device=x.device, dtype=torch.float32) if r2 else None
    if m_rows == 0:
        return u, t
    rb = 2
    grid = (m_rows, max(1, triton.cdiv(r2, rb)))
    _prep_kernel[grid](x, x.stride(0), u if inv_scale is None else inv_scale, u if lowrank_a is None else lowrank_a,
                       u, u if t is None else t, n, max(r2, 1), UNIT=inv_scale is None, HAS_LR=r2 > 0, RB=rb,
                       BLOCK=512 if interpreting() else 1024, num_warps=4)
    return u, t


def lut_dequantize(codes: torch.Tensor, scales: torch.Tensor, tables: LutTables, group_len: int,
                   out_features: int, n_cols: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """``W'`` planar ``(out, 2 n_cols)`` in ``dtype``: ``[:, :n_cols]`` real parts, ``[:, n_cols:]`` imaginary
    (fp16 table entries)."""
    if not TRITON_AVAILABLE:
        raise RuntimeError("lut_dequantize needs the `triton` package (pip install triton)")
    w = torch.empty(out_features, 2 * n_cols, device=codes.device, dtype=dtype)
    if out_features and n_cols:
        grid = (triton.cdiv(out_features, 16), triton.cdiv(n_cols, 128))
        levels = tables.levels if tables.polar else tables.table_packed
        _lut_dequant_kernel[grid](codes, tables.table_packed, levels, scales, w, out_features, n_cols, group_len,
                                  POLAR=tables.polar, PHASE_BITS=tables.phase_bits, BLOCK_N=16, BLOCK_K=128,
                                  num_warps=4)
    return w


def _dequant_linear(uv, n, n_cols, codes, scales, tables, group_len, out_features, t, lr_out, bias, out_dtype):
    w = lut_dequantize(codes, scales, tables, group_len, out_features, n_cols, out_dtype)
    y = torch.matmul(planar_input(uv, n).to(out_dtype), w.T)
    if t is not None and t.shape[1]:
        y = y + (t @ lr_out.T).to(out_dtype)
    if bias is not None:
        y = y + bias.to(out_dtype)
    return y


__all__ = ["TRITON_AVAILABLE", "DEQUANT_MIN_BATCH", "GEMV_MAX_BATCH", "PREP_MAX_BATCH", "LutTables", "interpreting",
           "lut_dequantize", "lut_linear", "lut_tables", "pack_table", "spectral_prep",
           "use_prep_kernel"]
