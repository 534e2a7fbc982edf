"""`compression_report(model)`: what the Fourier compression of a model costs and how well it fits.

Per converted module: shape, rank, amplitude/phase bits, bits per weight (codes + scales +
levels + channel scale + factors in their saved dtype, the core's accounting), bytes as saved by
`save_pretrained` (factors in `factor_dtype`; in memory they are float32 so they can be trained), relative spatial error at
compression time (``approx_error``) and the compression ratio against the dense bf16 weight.
Totals cover the converted modules and the whole model (every parameter and buffer as stored,
against the same model dense in bf16).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .fourier_linear import is_fourier_linear

BF16_BYTES = 2


@dataclass
class ModuleReport:
    """One converted module. `bits_per_weight` and `stored_bytes`: as saved (factors in `factor_dtype`)."""

    name: str
    shape: tuple[int, int]
    rank: int
    amplitude_bits: int
    phase_bits: int
    bits_per_weight: float
    stored_bytes: int
    bf16_bytes: int
    error: float

    @property
    def ratio(self) -> float:
        """bf16 bytes / stored bytes."""
        return self.bf16_bytes / max(self.stored_bytes, 1)


@dataclass
class CompressionReport:
    """Per-module rows and totals; `str(report)` is a printable table."""

    modules: list[ModuleReport] = field(default_factory=list)
    model_stored_bytes: int = 0
    model_bf16_bytes: int = 0

    @property
    def total_weights(self) -> int:
        return sum(m.shape[0] * m.shape[1] for m in self.modules)

    @property
    def bits_per_weight(self) -> float:
        """Weighted mean nominal bits per weight over the converted modules."""
        bits = sum(m.bits_per_weight * m.shape[0] * m.shape[1] for m in self.modules)
        return bits / max(self.total_weights, 1)

    @property
    def stored_bytes(self) -> int:
        return sum(m.stored_bytes for m in self.modules)

    @property
    def bf16_bytes(self) -> int:
        return sum(m.bf16_bytes for m in self.modules)

    @property
    def ratio(self) -> float:
        """Converted modules: bf16 bytes / stored bytes."""
        return self.bf16_bytes / max(self.stored_bytes, 1)

    @property
    def model_ratio(self) -> float:
        """Whole model: bytes dense in bf16 / bytes as stored."""
        return self.model_bf16_bytes / max(self.model_stored_bytes, 1)

    @property
    def mean_error(self) -> float:
        """Weight-count-weighted mean relative error of the converted modules."""
        total = sum(m.error * m.shape[0] * m.shape[1] for m in self.modules)
        return total / max(self.total_weights, 1)

    def to_dict(self) -> dict:
        return {
            "modules": [dict(m.__dict__, ratio=m.ratio) for m in self.modules],
            "total": {"modules": len(self.modules), "weights": self.total_weights, "bits_per_weight": self.bits_per_weight,
                      "stored_bytes": self.stored_bytes, "bf16_bytes": self.bf16_bytes, "ratio": self.ratio,
                      "mean_error": self.mean_error},
            "model": {"stored_bytes": self.model_stored_bytes, "bf16_bytes": self.model_bf16_bytes,
                      "ratio": self.model_ratio},
        }

    def __str__(self) -> str:
        head = f"{'module':<58} {'shape':>11} {'rank':>4} {'bits':>5} {'bpw':>6} {'bytes':>10} {'x bf16':>7} {'error':>7}"
        lines = [head, "-" * len(head)]
        for m in self.modules:
            lines.append(f"{m.name[-58:]:<58} {f'{m.shape[0]}x{m.shape[1]}':>11} {m.rank:>4} "
                         f"{f'{m.amplitude_bits}+{m.phase_bits}':>5} {m.bits_per_weight:>6.2f} {m.stored_bytes:>10,d} "
                         f"{m.ratio:>7.2f} {m.error:>7.4f}")
        lines.append("-" * len(head))
        lines.append(f"{f'converted modules ({len(self.modules)})':<58} {self.total_weights:>11,d} {'':>4} {'':>5} "
                     f"{self.bits_per_weight:>6.2f} {self.stored_bytes:>10,d} {self.ratio:>7.2f} {self.mean_error:>7.4f}")
        lines.append(f"{'whole model (as stored vs dense bf16)':<58} {'':>11} {'':>4} {'':>5} {'':>6} "
                     f"{self.model_stored_bytes:>10,d} {self.model_ratio:>7.2f}")
        return "\n".join(lines)


def compression_report(model: nn.Module) -> CompressionReport:
    """Build the :class:`CompressionReport` of a model holding FourierLinear modules (any device)."""
    report = CompressionReport()
    fourier_prefixes: set[str] = set()
    for name, module in model.named_modules():
        if not is_fourier_linear(module):
            continue
        fourier_prefixes.add(name)
        m, n = module.out_features, module.in_features
        report.modules.append(ModuleReport(
            name=name, shape=(m, n), rank=module.rank, amplitude_bits=module.amplitude_bits,
            phase_bits=module.phase_bits, bits_per_weight=module.nbits() / (m * n),
            stored_bytes=module.stored_bytes(), bf16_bytes=m * n * BF16_BYTES, error=float(module.approx_error),
        ))
    seen: set[int] = set()
    for name, tensor in list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers()):
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        owner = name.rsplit(".", 1)[0]
        if owner in fourier_prefixes and not name.endswith(".bias"):
            continue  # stored tensors counted below; the dense weight it replaces too
        report.model_stored_bytes += tensor.numel() * tensor.element_size()
        if tensor.is_floating_point():
            report.model_bf16_bytes += tensor.numel() * BF16_BYTES
    report.model_stored_bytes += report.stored_bytes
    report.model_bf16_bytes += report.bf16_bytes
    return report


__all__ = ["compression_report", "CompressionReport", "ModuleReport"]
