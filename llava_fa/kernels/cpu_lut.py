"""CPU LUT kernel of the FourierLinear inference path (C++ in ``cpu_lut_source.SOURCE``), built on first use.

``lut_matmul(xp, ...)`` computes ``x' W'^T`` for the quantized part (see :mod:`.spectral`) in one pass over the
8-bit codes: no dense weight, no dequantised spectrum and no table of partial products is written. The C++
source has no Python bindings: it is written to a cache folder (under ``TORCH_EXTENSIONS_DIR`` or
``~/.cache/torch_extensions``, keyed by the source and torch version), :func:`torch.utils.cpp_extension.load`
builds it there (ninja + the system C++ compiler, about 2 s, once) and ``ctypes`` calls it. It picks an
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
from pathlib import Path
from typing import Optional

import torch

from ..fourier.polar_quant import polar_lookup_table
from .cpu_lut_source import SOURCE

logger = logging.getLogger(__name__)

ENV_SWITCH = "LLAVA_FA_CPU_KERNEL"
#: Variants of ``llava_fa_lut_gemv``: 0 picks the best this CPU runs.
VARIANTS = {"auto": 0, "portable": 1, "avx2": 2, "avx512_gather": 3, "avx512_polar": 4}
#: Largest batch (rows of ``x``) routed to the kernel; larger batches dequantise chunks and call the BLAS.
MAX_ROWS = 16

#: Compiler flags: ATen's `parallel_for` is OpenMP in torch's CPU builds and needs -fopenmp to run in parallel
#: (the loaded libgomp.so.1 is torch's own, so there is one OpenMP runtime and torch.set_num_threads applies).
CFLAGS = ["-O3", "-fopenmp"]

_LIB: Optional[ctypes.CDLL] = None
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


def supported(x: torch.Tensor, code_bits: int, n_cols: int, group_len: int) -> bool:
    """True when :func:`lut_matmul` handles this call (CPU tensor, 8-bit codes, 16-aligned sizes, small batch)."""
    return (x.device.type == "cpu" and code_bits == 8 and n_cols % 16 == 0 and group_len % 16 == 0
            and 0 < x.shape[0] <= MAX_ROWS and kernel() is not None)


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
    lib = kernel()
    if lib is None:
        raise RuntimeError("the CPU LUT kernel is not available (see the warning logged when it was built)")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    rows, n_cols = xp.shape[0], xp.shape[1] // 2
    if codes.dtype != torch.uint8 or codes.numel() < out_features * n_cols or tables["pairs"].shape != (256, 2):
        raise ValueError(f"lut_matmul needs uint8 codes (>= {out_features * n_cols}) and a 256-entry table, got "
                         f"{codes.dtype} x {codes.numel()} and {tables['pairs'].shape[0]} entries")
    if scales.dtype not in _SCALE_KINDS:
        raise ValueError(f"lut_matmul: scales must be float32, float16 or bfloat16, got {scales.dtype}")
    xp = xp.detach().float().contiguous()
    codes, scales = codes.contiguous(), scales.contiguous()
    out = torch.empty(rows, out_features, dtype=torch.float32)
    lev = tables.get("lev")
    ptr = lambda t: None if t is None else t.data_ptr()  # noqa: E731
    status = lib.llava_fa_lut_gemv(ptr(codes), ptr(scales), _SCALE_KINDS[scales.dtype], group_len,
                                   ptr(tables["pairs"]), ptr(lev), ptr(tables.get("cos")), ptr(tables.get("sin")),
                                   phase_bits, ptr(xp), rows, n_cols, ptr(out), out_features, VARIANTS[variant])
    if status == 1:
        raise RuntimeError(f"the CPU LUT kernel variant {variant!r} cannot run on this CPU"
                           + ("" if lev is not None or variant != "avx512_polar" else " or with a non-polar table"))
    if status:
        raise RuntimeError(f"the CPU LUT kernel rejected the shapes: n_cols={n_cols} and group_len={group_len} must "
                           f"be multiples of 16")
    return out


__all__ = ["ENV_SWITCH", "MAX_ROWS", "VARIANTS", "cpu_tables", "default_variant", "kernel", "lut_matmul", "supported"]
