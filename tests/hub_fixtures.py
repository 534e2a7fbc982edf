"""Shared, memoised artefacts for the CLI / card / push tests (one compression per test session).

`compressed_tiny(tmp_path_factory, tiny_folder)` runs ``python -m llava_fa.cli compress`` once (in a
subprocess, with ``HF_HUB_DISABLE_PROGRESS_BARS=1``) on the tiny LLaVA-FA folder with fast settings and
returns a :class:`Compressed` record; every later call returns the same record. Tests must not modify
its folder (copy it first).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

#: Fast settings for tests (seconds on 2 cores): small rank, uniform levels, one round of Algorithm 1.
FAST_FLAGS = ["--rank", "2", "--codebook", "uniform", "--override", ".*.max_iters=1"]
BASE_MODEL = "org/tiny-llava-fa"


@dataclass
class Compressed:
    folder: Path
    source: Path
    stdout: str
    stderr: str


_CACHE: dict[str, Compressed] = {}


def run_cli(args: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m llava_fa.cli ARGS` in a subprocess (offline), text output captured."""
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "llava_fa.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def compressed_tiny(tmp_path_factory, tiny_folder: Path) -> Compressed:
    if "tiny" not in _CACHE:
        out = tmp_path_factory.mktemp("cli_compressed") / "tiny-fourier"
        proc = run_cli(["compress", str(tiny_folder), str(out), *FAST_FLAGS, "--base-model", BASE_MODEL],
                       env={"HF_HUB_DISABLE_PROGRESS_BARS": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        _CACHE["tiny"] = Compressed(out, Path(tiny_folder), proc.stdout, proc.stderr)
    return _CACHE["tiny"]


def tree_state(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """{relative path: (size, mtime_ns, first bytes)} of every file (hidden ones too): to check a folder is unchanged."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[p.relative_to(folder).as_posix()] = (st.st_size, st.st_mtime_ns, p.read_bytes()[:4096])
    return out
