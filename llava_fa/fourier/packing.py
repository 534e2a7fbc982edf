"""Bit-packing of integer codes into a flat uint8 stream.

Codes of ``bits`` bits (1..16) are written little-endian bit by bit into
consecutive bytes: code ``i`` occupies stream bits ``[i*bits, (i+1)*bits)``,
bit ``j`` of a byte is ``(byte >> j) & 1``. Widths 1, 2, 4 and 8 take a fast
path (``8 // bits`` codes per byte, code ``i`` of a byte at bit ``i*bits``),
which is the same layout. A GPU kernel reading 8-bit joint codes therefore sees
one byte per complex coefficient; 4-bit codes two per byte, low nibble first.
"""

from __future__ import annotations

import math

import torch

MAX_CODE_BITS = 16


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes needed to store ``count`` codes of ``bits`` bits."""
    return math.ceil(count * bits / 8)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack a 1-D integer tensor with values in ``[0, 2**bits)`` into uint8 ``(packed_nbytes,)``."""
    _check_bits(bits)
    flat = codes.reshape(-1).to(torch.int32)
    count = flat.numel()
    if count and (int(flat.min()) < 0 or int(flat.max()) >= (1 << bits)):
        raise ValueError(f"codes must lie in [0, {1 << bits}) for bits={bits}")
    if bits == 8:
        return flat.to(torch.uint8)
    if 8 % bits == 0:
        per = 8 // bits
        pad = (-count) % per
        flat = torch.nn.functional.pad(flat, (0, pad)).view(-1, per)
        shifts = torch.arange(per, device=flat.device, dtype=torch.int32) * bits
        return (flat << shifts).sum(dim=1).to(torch.uint8)
    shifts = torch.arange(bits, device=flat.device, dtype=torch.int32)
    bitstream = ((flat.unsqueeze(1) >> shifts) & 1).reshape(-1)
    bitstream = torch.nn.functional.pad(bitstream, (0, (-bitstream.numel()) % 8)).view(-1, 8)
    byte_shifts = torch.arange(8, device=flat.device, dtype=torch.int32)
    return (bitstream << byte_shifts).sum(dim=1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: int64 ``(count,)`` codes from a uint8 stream."""
    _check_bits(bits)
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed codes must be uint8, got {packed.dtype}")
    if packed.numel() < packed_nbytes(count, bits):
        raise ValueError(
            f"packed stream holds {packed.numel()} bytes but {count} codes of {bits} bits need "
            f"{packed_nbytes(count, bits)}"
        )
    data = packed.reshape(-1).to(torch.int64)
    if bits == 8:
        return data[:count]
    if 8 % bits == 0:
        per = 8 // bits
        shifts = torch.arange(per, device=data.device, dtype=torch.int64) * bits
        return ((data.unsqueeze(1) >> shifts) & ((1 << bits) - 1)).reshape(-1)[:count]
    byte_shifts = torch.arange(8, device=data.device, dtype=torch.int64)
    bitstream = ((data.unsqueeze(1) >> byte_shifts) & 1).reshape(-1)[: count * bits].view(count, bits)
    shifts = torch.arange(bits, device=data.device, dtype=torch.int64)
    return (bitstream << shifts).sum(dim=1)


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or not 1 <= bits <= MAX_CODE_BITS:
        raise ValueError(f"bits must be an integer in 1..{MAX_CODE_BITS}, got {bits!r}")
