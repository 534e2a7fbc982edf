"""CPU LUT kernel of the FourierLinear inference path (C++ in ``cpu_lut_source.SOURCE``), built on first use.

* :func:`layer_plan` + :func:`run_layer`: the whole layer for a few input rows in ONE call: ``x / d``, its
  orthonormal rfft (:func:`rfft`, the kernel's own FFT; numpy's for lengths it does not take), the packed,
  weighted spectrum, the LUT product ``x' W'^T`` in one pass over the 8-bit codes (no dense weight, no
  dequantised spectrum, no table of partial products is written), the low-rank term and the bias.
* :func:`lut_matmul`: the LUT product alone (tests, benchmarks).
* :func:`planar_matmul` / :func:`planar_matmul_transposed`: larger batches; :func:`dequantize_planar` writes
  row chunks of ``W'`` (float32 or bfloat16) that the BLAS multiplies (AVX-512 CPUs).

The C++ source has no Python bindings: it is written to a cache folder (under ``TORCH_EXTENSIONS_DIR`` or
``~/.cache/torch_extensions``, keyed by the source and torch version), :func:`torch.utils.cpp_extension.load`
builds it there (ninja + the system C++ compiler, a few seconds, once) and ``ctypes`` calls it. It picks an
AVX-512 / AVX2 / portable variant from the CPU's features at run time.

When the kernel cannot be built (no compiler, no ninja, read-only cache) or ``LLAVA_FA_CPU_KERNEL=0`` is set,
:func:`kernel` returns ``None`` once with a warning and callers use the chunked torch path.

Scope: 8-bit codes (``amplitude_bits + phase_bits == 8``), ``n_cols % 16 == 0`` and ``group_len % 16 == 0``;
polar tables with both widths <= 5 bits use in-register permutes (AVX-512), every other table gathers.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..fourier.polar_quant import polar_lookup_table
from .cpu_lut_source import SOURCE

logger = logging.getLogger(__name__)

ENV_SWITCH = "LLAVA_FA_CPU_KERNEL"
#: Variants of ``llava_fa_lut_gemv``: 0 picks the best this CPU runs.
VARIANTS = {"auto": 0, "portable": 1, "avx2": 2, "avx512_gather": 3, "avx512_polar": 4}
#: Largest batch (rows of ``x``) routed to the LUT product for float32 outputs; larger batches dequantise chunks of
#: W' and call the BLAS (:func:`planar_matmul`). ``benchmarks/decode.py --device cpu`` (``lut_*`` / ``dequant_*``
#: columns) puts the crossover above 16 rows for float32 outputs and between 8 and 16 for bfloat16 ones, whose
#: dequantised product runs on the CPU's bfloat16 units.
MAX_ROWS = 16
#: The same for bfloat16 / float16 outputs.
HALF_MAX_ROWS = 8
#: Bytes of W' dequantised per chunk by :func:`planar_matmul`.
DEQUANT_CHUNK_BYTES = 4 << 20

#: Compiler flags: ATen's `parallel_for` is OpenMP in torch's CPU builds and needs -fopenmp to run in parallel
#: (the loaded libgomp.so.1 is torch's own, so there is one OpenMP runtime and torch.set_num_threads applies).
CFLAGS = ["-O3", "-fopenmp"]

_LIB: Optional[ctypes.CDLL] = None
#: Per-thread scratch buffer of the dequantised chunks.
_SCRATCH = threading.local()
_TRIED = False


def _build() -> ctypes.CDLL:
    from torch.utils.cpp_extension import load

    tag = hashlib.sha256(SOURCE.encode() + torch.__version__.encode() + " ".join(CFLAGS).encode()).hexdigest()[:12]
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")
    folder = root / f"llava_fa_cpu_lut_{tag}"
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "cpu_lut.cpp"
    if not source.is_file() or source.read_text() != SOURCE:  # written atomically: ranks may race here
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".cpp.tmp")
        with os.fdopen(fd, "w") as handle:
            handle.write(SOURCE)
        os.replace(tmp, source)
    name = "llava_fa_cpu_lut"
    load(name=name, sources=[str(source)], extra_cflags=CFLAGS, extra_ldflags=["-fopenmp"],
         build_directory=str(folder), is_python_module=False, verbose=False)
    lib = ctypes.CDLL(str(folder / f"{name}.so"))
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.llava_fa_lut_gemv.restype = i64
    lib.llava_fa_lut_gemv.argtypes = [ptr, ptr, i64, i64, ptr, ptr, ptr, ptr, i64, ptr, i64, i64, ptr, i64, i64]
    lib.llava_fa_fourier_linear.restype = i64
    lib.llava_fa_fourier_linear.argtypes = [ptr, ptr, i64, i64, ptr, ptr, ptr, ptr, i64, ptr, i64, i64, ptr, i64, ptr,
                                            ptr, i64, ptr, i64]
    lib.llava_fa_lut_dequant.restype = i64
    lib.llava_fa_lut_dequant.argtypes = [ptr, ptr, i64, i64, ptr, ptr, ptr, ptr, i64, i64, i64, i64, ptr, i64]
    lib.llava_fa_fourier_linear_x.restype = i64
    lib.llava_fa_fourier_linear_x.argtypes = [ptr, ptr, i64, i64, ptr, ptr, ptr, ptr, i64, ptr, ptr, i64, i64, ptr, i64,
                                              ptr, ptr, i64, ptr, i64]
    lib.llava_fa_rfft.restype = i64
    lib.llava_fa_rfft.argtypes = [ptr, ptr, i64, i64, ptr]
    lib.llava_fa_rfft_supports.restype = i64
    lib.llava_fa_rfft_supports.argtypes = [i64]
    lib.llava_fa_lut_variant.restype = i64
    lib.llava_fa_lut_variant.argtypes = [i64]
    return lib


def kernel() -> Optional[ctypes.CDLL]:
    """The loaded kernel library, building it on the first call; ``None`` if disabled or it cannot be built."""
    global _LIB, _TRIED
    if _TRIED:
        return _LIB
    _TRIED = True
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        _LIB = _build()
    except Exception as exc:  # no compiler / ninja / writable cache: the torch path still works
        logger.warning(f"llava_fa: the CPU LUT kernel could not be built ({type(exc).__name__}: {exc}); "
                       f"FourierLinear uses the slower chunked torch path on the CPU. Install `ninja` and a C++ "
                       f"compiler to enable it, or set {ENV_SWITCH}=0 to silence this.")
        _LIB = None
    return _LIB


def default_variant(polar: bool) -> str:
    """Name of the variant ``"auto"`` runs on this CPU for a polar (or generic) table."""
    lib = kernel()
    if lib is None:
        raise RuntimeError("the CPU LUT kernel is not available (see the warning logged when it was built)")
    number = int(lib.llava_fa_lut_variant(int(polar)))
    return next(k for k, v in VARIANTS.items() if v == number)


def supported(x: torch.Tensor, code_bits: int, n_cols: int, group_len: int, half: bool = False) -> bool:
    """True when :func:`run_layer` takes this call (CPU tensor, 8-bit codes, 16-aligned sizes, 1 to ``MAX_ROWS``
    rows, or 1 to ``HALF_MAX_ROWS`` for a half-precision output, ``half``)."""
    return (x.device.type == "cpu" and code_bits == 8 and n_cols % 16 == 0 and group_len % 16 == 0
            and 0 < x.shape[0] <= (HALF_MAX_ROWS if half else MAX_ROWS) and kernel() is not None)


_SCALE_KINDS = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def cpu_tables(table: torch.Tensor, levels: Optional[torch.Tensor], phase_bits: int) -> dict[str, torch.Tensor]:
    """The kernel's view of a code table: float32 ``pairs`` ``(256, 2)`` (Re, Im) and, for a polar grid whose
    widths are both <= 5 bits (``levels`` given), the zero-padded ``lev`` / ``cos`` / ``sin`` ``(32,)`` factors."""
    entry = {"pairs": torch.view_as_real(table.detach().to("cpu", torch.complex64)).contiguous()}
    if levels is not None and 8 - phase_bits <= 5 and 3 <= phase_bits <= 5:
        unit = polar_lookup_table(torch.ones(1), phase_bits)
        pad = lambda v: torch.nn.functional.pad(v.float(), (0, 32 - v.numel())).contiguous()  # noqa: E731
        entry.update(lev=pad(levels.detach().float().cpu()), cos=pad(unit.real), sin=pad(unit.imag))
    return entry


def lut_matmul(xp: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, tables: dict[str, torch.Tensor],
               phase_bits: int, group_len: int, out_features: int, *, variant: str = "auto") -> torch.Tensor:
    """``x' W'^T``: float32 ``(M, out_features)`` from the interleaved spectral input ``xp`` ``(M, 2 n_cols)``.

    Args:
        codes: uint8, one 8-bit code per coefficient, at least ``out_features * n_cols`` of them.
        scales: per-group scales (float32 / float16 / bfloat16), ``group_len`` consecutive coefficients each.
        tables: :func:`cpu_tables` of the layer's code table (with ``lev`` the permute variant is possible).
        variant: ``"auto"`` or one of :data:`VARIANTS` (tests); ``RuntimeError`` if this CPU cannot run it.

    Raises ``RuntimeError`` if the kernel is unavailable or rejects the shapes (check :func:`supported`),
    ``ValueError`` for wrong argument types.
    """
    _check_call(codes, scales, tables, out_features * (xp.shape[1] // 2), variant)
    rows, n_cols = xp.shape[0], xp.shape[1] // 2
    xp = xp.detach().float().contiguous()
    codes, scales = codes.contiguous(), scales.contiguous()
    out = torch.empty(rows, out_features, dtype=torch.float32)
    status = kernel().llava_fa_lut_gemv(*_table_args(codes, scales, tables, group_len, phase_bits), _ptr(xp), rows,
                                        n_cols, _ptr(out), out_features, VARIANTS[variant])
    _raise_for(status, variant, "lev" in tables, n_cols, group_len)
    return out


def dequantize_supported(device: torch.device, code_bits: int, n_cols: int, group_len: int) -> bool:
    """True when :func:`dequantize_planar` takes a layer on ``device`` (the CPU, the kernel built, an AVX-512 CPU,
    8-bit codes, 16-aligned sizes)."""
    if torch.device(device).type != "cpu" or code_bits != 8 or n_cols % 16 or group_len % 16:
        return False
    lib = kernel()
    return lib is not None and int(lib.llava_fa_lut_variant(0)) == VARIANTS["avx512_gather"]


def dequantize_planar(codes: torch.Tensor, scales: torch.Tensor, tables: dict[str, torch.Tensor], phase_bits: int,
                      group_len: int, n_cols: int, start: int, stop: int, dtype: torch.dtype = torch.float32,
                      out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Rows ``[start, stop)`` of the quantized ``W'`` in the planar layout ``[Re | Im]``: ``(stop - start, 2 n_cols)``
    in ``dtype`` (float32 or bfloat16, rounded to nearest even), written into ``out`` when given (contiguous, that
    shape and dtype). Multiplies the planar spectral input ``[w Re X | w Im X]`` (``spectral.planar_input``).

    Raises ``RuntimeError`` where :func:`dequantize_supported` is False, ``ValueError`` for bad arguments.
    """
    _check_call(codes, scales, tables, stop * n_cols, "auto")
    if dtype not in (torch.float32, torch.bfloat16) or not 0 <= start <= stop:
        raise ValueError(f"dequantize_planar: dtype must be float32 or bfloat16 and 0 <= start <= stop, got {dtype}, "
                         f"[{start}, {stop})")
    shape = (stop - start, 2 * n_cols)
    if out is None:
        out = torch.empty(shape, dtype=dtype)
    elif out.shape != shape or out.dtype != dtype or not out.is_contiguous():
        raise ValueError(f"dequantize_planar: out must be a contiguous {dtype} tensor of shape {shape}")
    codes, scales = codes.contiguous(), scales.contiguous()
    status = kernel().llava_fa_lut_dequant(*_table_args(codes, scales, tables, group_len, phase_bits), start, stop,
                                           n_cols, _ptr(out), int(dtype == torch.bfloat16))
    if status == 1:
        raise RuntimeError("dequantize_planar needs an AVX-512 CPU (see dequantize_supported)")
    _raise_for(status, "auto", "lev" in tables, n_cols, group_len)
    return out


def _planar_chunks(codes: torch.Tensor, scales: torch.Tensor, tables: dict[str, torch.Tensor], phase_bits: int,
                   group_len: int, n_cols: int, out_features: int, dtype: torch.dtype):
    """``(start, stop, W'[start:stop] planar)`` over row chunks of about ``DEQUANT_CHUNK_BYTES``, in one reused
    buffer (each chunk is valid until the next one is produced)."""
    rows = max(16, DEQUANT_CHUNK_BYTES // (2 * n_cols * dtype.itemsize) // 16 * 16)
    size = min(rows, out_features) * 2 * n_cols
    buffer = getattr(_SCRATCH, "buffer", None)  # reused: a fresh large buffer per call costs its page faults
    if buffer is None or buffer.numel() * buffer.element_size() < size * dtype.itemsize:
        buffer = _SCRATCH.buffer = torch.empty(size * dtype.itemsize, dtype=torch.uint8)
    buffer = buffer[: size * dtype.itemsize].view(dtype).view(-1, 2 * n_cols)
    for start in range(0, out_features, rows):
        stop = min(start + rows, out_features)
        yield start, stop, dequantize_planar(codes, scales, tables, phase_bits, group_len, n_cols, start, stop, dtype,
                                             out=buffer[: stop - start])


def planar_matmul(xpl: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, tables: dict[str, torch.Tensor],
                  phase_bits: int, group_len: int, out_features: int) -> torch.Tensor:
    """``xpl W'^T``: float32 ``(M, out_features)`` from the planar spectral input ``xpl`` ``(M, 2 n_cols)``
    (float32, or bfloat16 for a bfloat16 product: the CPU's AMX / AVX512-BF16 units), over row chunks of ``W'``
    dequantised by :func:`dequantize_planar` (about ``DEQUANT_CHUNK_BYTES`` each)."""
    y = torch.empty(xpl.shape[0], out_features, dtype=torch.float32)
    for start, stop, w in _planar_chunks(codes, scales, tables, phase_bits, group_len, xpl.shape[1] // 2,
                                         out_features, xpl.dtype):
        if xpl.dtype == torch.float32:
            torch.matmul(xpl, w.T, out=y[:, start:stop])
        else:
            y[:, start:stop] = xpl @ w.T
    return y


def planar_matmul_transposed(grad: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor,
                             tables: dict[str, torch.Tensor], phase_bits: int, group_len: int,
                             n_cols: int) -> torch.Tensor:
    """``grad W'``: float32 ``(M, 2 n_cols)`` (planar) from float32 ``grad`` ``(M, out_features)``: the backward of
    :func:`planar_matmul` with respect to its input."""
    out = grad.new_zeros(grad.shape[0], 2 * n_cols)
    for start, stop, w in _planar_chunks(codes, scales, tables, phase_bits, group_len, n_cols, grad.shape[1],
                                         torch.float32):
        out.addmm_(grad[:, start:stop], w)
    return out


def rfft_supported(n: int) -> bool:
    """True when the kernel's own FFT (:func:`rfft`) takes length ``n``: even, with the odd factor of ``n / 2`` at
    most 64 (every Qwen2.5 / CLIP width); ``False`` without the kernel."""
    lib = kernel()
    return lib is not None and n >= 2 and bool(lib.llava_fa_rfft_supports(n))


def rfft(x: torch.Tensor, inverse_scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``view_as_real(rfft(x * inverse_scale, norm="ortho"))`` float32 ``(M, n // 2 + 1, 2)`` for a CPU ``x``
    ``(M, n)``, by the kernel's own FFT (four-step: ``n / 2 = N1 N2``, ``N1`` a power of two; plans cached per
    ``n``). ``ValueError`` where :func:`rfft_supported` is False."""
    n = x.shape[-1]
    if x.dim() != 2 or not rfft_supported(n):
        raise ValueError(f"rfft: x must be (M, n) with n even and the odd factor of n / 2 at most 64, got "
                         f"{tuple(x.shape)}")
    u = x.detach().float().contiguous()
    uv = torch.empty(u.shape[0], n // 2 + 1, 2, dtype=torch.float32)
    if _LIB.llava_fa_rfft(u.data_ptr(), _ptr(_float_vector(inverse_scale)), u.shape[0], n, uv.data_ptr()):
        raise ValueError(f"rfft: the kernel's FFT does not take n={n}")
    return uv


def _float_vector(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.detach().float().contiguous()


def spectral_input_numpy(x: torch.Tensor, inverse_scale: Optional[torch.Tensor]) -> torch.Tensor:
    """``view_as_real(rfft(x * inverse_scale, norm="ortho"))`` float32 ``(M, n // 2 + 1, 2)`` for a CPU ``x``
    ``(M, n)``, through numpy's pocketfft, which keeps its plans between calls (``torch.fft.rfft`` on the CPU sets
    up an MKL descriptor on every call: the fixed cost that matters at batch 1)."""
    u = x.detach().float()
    u = (u if inverse_scale is None else u * inverse_scale).contiguous().numpy()
    spectrum = np.fft.rfft(u, axis=-1, norm="ortho")
    if spectrum.dtype != np.complex64:  # numpy < 2 computes in double precision
        spectrum = spectrum.astype(np.complex64)
    return torch.from_numpy(np.ascontiguousarray(spectrum).view(np.float32)).view(u.shape[0], -1, 2)


@dataclass(frozen=True)
class LayerPlan:
    """One layer's arguments of the whole-layer kernel call, checked once (see :func:`layer_plan`).

    ``head`` holds the pointer / integer arguments before the input, ``tail`` those after the output;
    ``keep`` the tensors they point into (kept alive with the plan).
    """

    head: tuple
    tail: tuple
    keep: tuple
    in_features: int
    out_features: int
    n_cols: int
    group_len: int
    variant: str
    has_levels: bool
    own_fft: bool
    inverse_scale: Optional[torch.Tensor]
    inverse_ptr: Optional[int]


def layer_plan(codes: torch.Tensor, scales: torch.Tensor, tables: dict[str, torch.Tensor], phase_bits: int,
               group_len: int, out_features: int, in_features: int, lr_in: Optional[torch.Tensor] = None,
               lr_out: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None,
               inverse_scale: Optional[torch.Tensor] = None, *, variant: str = "auto") -> LayerPlan:
    """Checks and packs one layer's arguments for :func:`run_layer` (build it once per layer, run it per call).

    Args:
        lr_in, lr_out: the low-rank matrices ``(2r, 2 (n // 2 + 1))`` / ``(out_features, 2r)`` of
            ``spectral.lowrank_input_matrix`` / ``lowrank_output_matrix``, or both ``None`` (rank 0).
        bias: ``(out_features,)`` or ``None``.
        inverse_scale: ``(in_features,)`` ``1 / d`` the input is multiplied by before its rfft, or ``None``.

    Raises the errors of :func:`lut_matmul`, and ``ValueError`` for low-rank matrices or a bias of the wrong shape.
    """
    n_cols = in_features // 2 if in_features % 2 == 0 else in_features // 2 + 1
    _check_call(codes, scales, tables, out_features * n_cols, variant)
    codes, scales = codes.detach().contiguous(), scales.detach().contiguous()
    rank2 = 0
    if lr_in is not None:
        lr_in, lr_out = lr_in.detach().float().contiguous(), lr_out.detach().float().contiguous()
        rank2 = lr_in.shape[0]
        if lr_in.shape != (rank2, 2 * (in_features // 2 + 1)) or lr_out.shape != (out_features, rank2):
            raise ValueError(f"layer_plan: low-rank matrices of shapes {tuple(lr_in.shape)} / {tuple(lr_out.shape)} "
                             f"do not fit in_features={in_features}, out_features={out_features}")
    if bias is not None:
        bias = bias.detach().float().contiguous()
        if bias.shape != (out_features,):
            raise ValueError(f"layer_plan: bias of shape {tuple(bias.shape)}, expected ({out_features},)")
    inverse = _float_vector(inverse_scale)
    if inverse is not None and inverse.shape != (in_features,):
        raise ValueError(f"layer_plan: inverse_scale of shape {tuple(inverse.shape)}, expected ({in_features},)")
    head = _table_args(codes, scales, tables, group_len, phase_bits)
    lr_out_t = None if lr_out is None else lr_out.T.contiguous()  # the kernel adds one axpy per rank
    tail = (out_features, _ptr(lr_in), _ptr(lr_out_t), rank2, _ptr(bias), VARIANTS[variant])
    return LayerPlan(head=head, tail=tail, keep=(codes, scales, tables, lr_in, lr_out_t, bias), in_features=in_features,
                     out_features=out_features, n_cols=n_cols, group_len=group_len, variant=variant,
                     has_levels="lev" in tables, own_fft=rfft_supported(in_features), inverse_scale=inverse,
                     inverse_ptr=_ptr(inverse))


def run_layer(plan: LayerPlan, x: torch.Tensor) -> torch.Tensor:
    """The whole inference layer on the CPU: float32 ``(M, out_features)`` for ``x`` ``(M, in_features)``, ``M >= 1``.

    ONE kernel call: the orthonormal rfft of ``x * plan.inverse_scale`` (:func:`rfft`; numpy's for the lengths it does
    not take, before the call), the packing and weighting of the spectrum, the LUT product, the low-rank term
    ``(uv_flat lr_in^T) lr_out^T`` and the bias.
    """
    if x.dim() != 2 or x.shape[1] != plan.in_features or x.shape[0] == 0:
        raise ValueError(f"run_layer: x must be (M >= 1, {plan.in_features}), got {tuple(x.shape)}")
    out = torch.empty(x.shape[0], plan.out_features, dtype=torch.float32)
    if plan.own_fft:  # everything from x on in C++
        u = x if x.dtype == torch.float32 and x.is_contiguous() else x.float().contiguous()
        status = _LIB.llava_fa_fourier_linear_x(*plan.head, u.data_ptr(), plan.inverse_ptr, u.shape[0],
                                                plan.in_features, out.data_ptr(), *plan.tail)
    else:
        uv = spectral_input_numpy(x, plan.inverse_scale)
        status = _LIB.llava_fa_fourier_linear(*plan.head, uv.data_ptr(), uv.shape[0], plan.in_features,
                                              out.data_ptr(), *plan.tail)
    if status:
        _raise_for(status, plan.variant, plan.has_levels, plan.n_cols, plan.group_len)
    return out


def fourier_linear(x: torch.Tensor, inverse_scale: Optional[torch.Tensor], codes: torch.Tensor, scales: torch.Tensor,
                   tables: dict[str, torch.Tensor], phase_bits: int, group_len: int, out_features: int,
                   lr_in: Optional[torch.Tensor] = None, lr_out: Optional[torch.Tensor] = None,
                   bias: Optional[torch.Tensor] = None, *, variant: str = "auto") -> torch.Tensor:
    """:func:`run_layer` of a one-off :func:`layer_plan` (same arguments): float32 ``(M, out_features)``."""
    plan = layer_plan(codes, scales, tables, phase_bits, group_len, out_features, x.shape[-1], lr_in, lr_out, bias,
                      inverse_scale, variant=variant)
    return run_layer(plan, x)


def _ptr(t: Optional[torch.Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


def _table_args(codes: torch.Tensor, scales: torch.Tensor, tables: dict[str, torch.Tensor], group_len: int,
                phase_bits: int) -> tuple:
    """The leading arguments every kernel entry takes: codes, scales and their type, group, the code table."""
    return (_ptr(codes), _ptr(scales), _SCALE_KINDS[scales.dtype], group_len, _ptr(tables["pairs"]),
            _ptr(tables.get("lev")), _ptr(tables.get("cos")), _ptr(tables.get("sin")), phase_bits)


def _check_call(codes: torch.Tensor, scales: torch.Tensor, tables: dict[str, torch.Tensor], coefficients: int,
                variant: str) -> None:
    if kernel() is None:
        raise RuntimeError("the CPU LUT kernel is not available (see the warning logged when it was built)")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    if codes.dtype != torch.uint8 or codes.numel() < coefficients or tables["pairs"].shape != (256, 2):
        raise ValueError(f"the CPU LUT kernel needs uint8 codes (>= {coefficients}) and a 256-entry table, got "
                         f"{codes.dtype} x {codes.numel()} and {tables['pairs'].shape[0]} entries")
    if scales.dtype not in _SCALE_KINDS:
        raise ValueError(f"the CPU LUT kernel: scales must be float32, float16 or bfloat16, got {scales.dtype}")


def _raise_for(status: int, variant: str, has_levels: bool, n_cols: int, group_len: int) -> None:
    if status == 1:
        raise RuntimeError(f"the CPU LUT kernel variant {variant!r} cannot run on this CPU"
                           + ("" if has_levels or variant != "avx512_polar" else " or with a non-polar table"))
    if status:
        raise RuntimeError(f"the CPU LUT kernel rejected the shapes: n_cols={n_cols} and group_len={group_len} must "
                           f"be multiples of 16")


__all__ = ["DEQUANT_CHUNK_BYTES", "ENV_SWITCH", "HALF_MAX_ROWS", "MAX_ROWS", "VARIANTS", "LayerPlan", "cpu_tables",
           "default_variant", "dequantize_planar", "dequantize_supported", "fourier_linear", "kernel", "layer_plan",
           "lut_matmul", "planar_matmul", "planar_matmul_transposed", "rfft", "rfft_supported", "run_layer",
           "spectral_input_numpy", "supported"]
