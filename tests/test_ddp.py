"""Two processes, one DDP model on the CPU: torchrun + FourierTrainer(use_cpu=True) over gloo."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fourier_train_child import shared_compressed_folder  # noqa: E402

CHILD = Path(__file__).with_name("fourier_train_child.py")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_one_ddp_model(tmp_path_factory, tmp_path):
    folder = shared_compressed_folder(tmp_path_factory)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(CHILD.parent), *sys.path]))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), str(CHILD), str(folder), str(tmp_path), "bare"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank, info in enumerate(ranks):
        assert info["rank"] == rank and info["world_size"] == 2
        assert info["distributed_type"].endswith("MULTI_CPU")
        assert info["ddp"] == "DistributedDataParallel"
        assert info["broadcast_buffers"] is False  # codes/scales/tables are not re-sent every step
        assert info["find_unused_parameters"] is False  # the unused CLIP layer is left out of training
        assert len(info["losses"]) == 2
    assert ranks[0]["checksum"] == ranks[1]["checksum"]  # replicas stayed identical
