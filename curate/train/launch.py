"""Multi-process training: open_clip_train under torchrun (``torch.distributed.run``), DataComp's way.

``curate train --nproc-per-node N [--nnodes M --node-rank R --master-addr A --master-port P]``
starts ``python -m torch.distributed.run ... -m curate.train.rank -- <open_clip_train args>`` on
this node; every rank runs open_clip_train's own ``main`` (DDP; NCCL on GPUs, gloo on CPU, as
open_clip_train chooses). What changes with the world size, and nothing else:

- ``--batch-size`` is the per-rank batch: the preset's global batch // (world size x accum freq),
  DataComp's arithmetic (its train.py floors the same way); samples seen stay the preset's;
- ``--local-loss --gather-with-grad --ddp-static-graph`` when the preset asks for it (DataComp's
  scales) and there is more than one rank;
- a resume checkpoint written by another world size gets the key prefix this one expects
  (open_clip_train saves the DDP-wrapped model: ``module.`` keys with several ranks, bare keys
  with one; it strips ``module.`` for one rank but never adds it), so a run interrupted on 8
  GPUs resumes on 4, 1 or 16.

Each rank writes ``ranks/rank_<r>.json`` (host, device, epochs trained, samples, seconds in
open_clip's epoch loop, samples/s); node 0 gathers them into ``train.json``. Several nodes need
the run folder on a shared filesystem (every rank loads the resume checkpoint; rank 0 writes).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from curate.errors import CurateError

RANKS_DIR = "ranks"


class LaunchError(CurateError):
    """A torchrun launch is mis-specified."""


@dataclass(frozen=True)
class Launch:
    """Where the ranks run: torchrun's own parameters plus gradient accumulation."""

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None  # None with one node: torchrun --standalone (a free local port)
    master_port: int = 29500
    accum_freq: int = 1

    def __post_init__(self):
        for name in ("nproc_per_node", "nnodes", "accum_freq"):
            if int(getattr(self, name)) < 1:
                raise LaunchError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.node_rank < self.nnodes:
            raise LaunchError(f"--node-rank must be in [0, {self.nnodes}), got {self.node_rank}")
        if self.nnodes > 1 and not self.master_addr:
            raise LaunchError("--nnodes > 1 needs --master-addr (the address of node 0, reachable from every node)")

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    @property
    def uses_torchrun(self) -> bool:
        return self.world_size > 1

    def to_dict(self) -> dict:
        return {**asdict(self), "world_size": self.world_size}


def per_rank_batch(global_batch: int, world_size: int, accum_freq: int = 1) -> int:
    """DataComp's per-GPU batch: global // (world size x accum freq), at least 1 sample."""
    b = int(global_batch) // (int(world_size) * int(accum_freq))
    if b < 1:
        raise LaunchError(f"global batch {global_batch} is smaller than world size {world_size} x accum freq "
                          f"{accum_freq}: every rank needs at least one sample per step")
    return b


def distributed_args(local_loss: bool, launch: Launch) -> list[str]:
    """open_clip_train flags that only mean something with several ranks (or accumulation)."""
    args: list[str] = []
    if launch.world_size > 1:
        args.append("--ddp-static-graph")  # DataComp's flag: the graph is the same every step
        if local_loss:
            args += ["--local-loss", "--gather-with-grad"]
    if launch.accum_freq > 1:
        args += ["--accum-freq", str(launch.accum_freq)]
    return args


def torchrun_command(launch: Launch, rank_args: list[str], python: str | None = None) -> list[str]:
    """``python -m torch.distributed.run ... -m curate.train.rank RANK_ARGS`` for this node."""
    cmd = [python or sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(launch.nproc_per_node)]
    if launch.nnodes == 1 and not launch.master_addr:
        cmd.append("--standalone")  # rendezvous on a free local port: runs side by side never clash
    else:
        cmd += ["--nnodes", str(launch.nnodes), "--node-rank", str(launch.node_rank),
                "--master-addr", launch.master_addr or "127.0.0.1", "--master-port", str(launch.master_port)]
    return cmd + ["-m", "curate.train.rank", *rank_args]


def rank_environment(launch: Launch, device: str, threads: int | None) -> dict[str, str]:
    """The ranks' environment: on CPU, the node's cores split between its ranks (torchrun's own
    default is one thread each); on GPU, torchrun's default."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    elif device.startswith("cpu") and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // launch.nproc_per_node))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# ---------------------------------------------------------------- checkpoints
def align_resume_checkpoint(checkpoint_dir: Path, distributed: bool) -> Path | None:
    """Give the checkpoint open_clip_train will resume from the key prefix this world size needs.

    Returns the checkpoint rewritten, or None when nothing needed it. The rewrite is atomic
    (temporary file + rename) and keeps everything else (epoch, optimizer, scaler).
    """
    import torch
    from open_clip_train.main import get_latest_checkpoint

    from curate.tables import atomic_write_bytes

    if not checkpoint_dir.is_dir():
        return None
    latest = get_latest_checkpoint(str(checkpoint_dir), remote=False)
    if latest is None:
        return None
    ckpt = torch.load(latest, map_location="cpu", weights_only=True)
    sd = ckpt.get("state_dict")
    if not isinstance(sd, dict) or not sd:
        return None
    if not distributed or next(iter(sd)).startswith("module."):
        return None  # already right; open_clip_train strips "module." itself in one process
    ckpt["state_dict"] = {f"module.{k}": v for k, v in sd.items()}
    import io

    buf = io.BytesIO()
    torch.save(ckpt, buf)
    atomic_write_bytes(latest, buf.getvalue())
    return Path(latest)


# ---------------------------------------------------------------- per-rank figures
def rank_record(rank: int, local_rank: int, world_size: int, device: str, epochs: list[dict]) -> dict:
    """One rank's throughput over the epochs it trained in this launch."""
    samples = sum(e["samples"] for e in epochs)
    seconds = sum(e["seconds"] for e in epochs)
    return {"rank": rank, "local_rank": local_rank, "world_size": world_size, "host": socket.gethostname(),
            "device": device, "epochs": [e["epoch"] for e in epochs], "samples": samples,
            "train_s": round(seconds, 3), "samples_per_s": round(samples / seconds, 2) if seconds > 0 else None}


def write_rank_record(output: Path, record: dict) -> None:
    from curate.tables import atomic_write_bytes

    d = output / RANKS_DIR
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(d / f"rank_{record['rank']}.json", (json.dumps(record, sort_keys=True) + "\n").encode())


def read_rank_records(output: Path) -> list[dict]:
    d = output / RANKS_DIR
    if not d.is_dir():
        return []
    recs = [json.loads(p.read_text()) for p in d.glob("rank_*.json")]
    return sorted(recs, key=lambda r: r["rank"])


def clear_rank_records(output: Path) -> None:
    d = output / RANKS_DIR
    if d.is_dir():
        for p in d.glob("rank_*.json"):
            p.unlink()
