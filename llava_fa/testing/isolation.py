"""Run Python in a fresh process where `llava_fa` is NOT importable (to check shipped remote code).

The child runs `python -I -S`: no cwd or PYTHON* variables on the path and no `site` processing,
so `.pth` files (the editable-install finder among them) are not executed. The parent's
site-packages directories are then appended to `sys.path` by hand, so transformers and torch
import as usual. The child asserts `importlib.util.find_spec("llava_fa") is None` before running
the given code (a non-editable install inside site-packages would fail that check loudly).
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import tempfile
from pathlib import Path

_PREAMBLE = """\
import importlib.util, sys
sys.path.extend({paths!r})
if importlib.util.find_spec("llava_fa") is not None:
    raise SystemExit("isolation failed: llava_fa is importable from " + str(importlib.util.find_spec("llava_fa").origin))
"""


def site_package_dirs() -> list[str]:
    """The current interpreter's site-packages directories (without running their .pth files)."""
    dirs = list(site.getsitepackages()) + [p for p in sys.path if p.endswith("site-packages")]
    return [d for d in dict.fromkeys(dirs) if Path(d).is_dir()]


def run_without_package(
    code: str,
    args: list[str] | None = None,
    timeout: float = 300,
    modules_cache: str | os.PathLike | None = None,
) -> subprocess.CompletedProcess:
    """Run `code` (with `sys.argv[1:] == args`) in a child where `llava_fa` is not importable.

    The child gets HF_HUB_OFFLINE=1 and its own HF_MODULES_CACHE (a new temp dir unless given),
    runs with cwd = a temp dir, and its stdout/stderr are captured (text). Raises
    `IsolatedRunError` (a `subprocess.CalledProcessError` whose message ends with the child's
    stderr) on a non-zero exit. Pass absolute paths in `args`: the child's cwd is a temp dir.
    """
    cache = Path(modules_cache) if modules_cache else Path(tempfile.mkdtemp(prefix="llava_fa_remote_"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(cache), TOKENIZERS_PARALLELISM="false")
    script = _PREAMBLE.format(paths=site_package_dirs()) + code
    with tempfile.TemporaryDirectory(prefix="llava_fa_cwd_") as cwd:
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", script, *(args or [])], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise IsolatedRunError(proc.returncode, "python -I -S -c <code without llava_fa>",
                               output=proc.stdout, stderr=proc.stderr)
    return proc


class IsolatedRunError(subprocess.CalledProcessError):
    """A failed isolated run; `str()` ends with the child's stderr tail so failures explain themselves."""

    def __str__(self) -> str:
        return super().__str__() + "\n--- child stderr (tail) ---\n" + (self.stderr or "")[-3000:]


__all__ = ["IsolatedRunError", "run_without_package", "site_package_dirs"]
