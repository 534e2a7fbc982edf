"""llava_fa.quantization.host_memory: mapped checkpoint pages are found and handed back without losing data."""

from __future__ import annotations

import mmap
import sys

import pytest
import torch
from safetensors.torch import load, save_file

from llava_fa.quantization import host_memory

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and madvise are Linux features")


def _resident_kib(path: str) -> int:
    """Resident KiB of this process's mappings of `path` (from /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as handle:
        for line in handle:
            head = line.split(maxsplit=1)[0]
            if "-" in head and not head.endswith(":"):
                inside = line.rstrip("\n").endswith(path)
            elif inside and head == "Rss:":
                total += int(line.split()[1])
    return total


@linux
def test_page_out_hands_back_read_checkpoint_pages_and_keeps_the_data(tmp_path):
    path = str(tmp_path / "weights.safetensors")
    original = torch.arange(16 << 20, dtype=torch.float32)  # 64 MiB
    save_file({"w": original}, path)
    with open(path, "rb") as handle:  # mapped and read the way a zero-copy loader does
        view = mmap.mmap(handle.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
    try:
        first = load(view[:])["w"]
        mapped = [m for m in host_memory.checkpoint_mappings() if m[2] == path]
        assert mapped and sum(end - start for start, end, _ in mapped) >= original.numel() * 4
        assert _resident_kib(path) >= 60 * 1024
        assert host_memory.page_out_checkpoints() >= original.numel() * 4
        assert _resident_kib(path) < 32 * 1024  # most of the 64 MiB left this process's RSS
        again = load(view[:])["w"]  # paged back in from the file
    finally:
        view.close()
    assert torch.equal(first, original) and torch.equal(again, original)


def test_release_is_safe_without_mappings_and_ignores_other_files():
    assert all(path.endswith(host_memory.CHECKPOINT_SUFFIXES) for _, _, path in host_memory.checkpoint_mappings())
    host_memory.release_freed_host_memory()  # nothing of ours mapped: nothing to do, no error
    assert host_memory.page_out_checkpoints(suffixes=(".no-such-suffix",)) == 0
