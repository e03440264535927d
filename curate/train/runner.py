"""The reference trainer: open_clip_train's own ``main`` with a preset's arguments.

curate never reimplements the training loop. It turns (shards, preset, seed) into the
argument list DataComp's ``train.py`` would pass (webdataset input, sampling with
replacement, ``--train-num-samples`` = samples seen / checkpoints, ``--epochs`` =
checkpoints), runs it, and records what happened in ``OUTPUT/train.json``.

Output folder (open_clip_train's layout, ``--logs`` = parent, ``--name`` = folder name)::

    out.log, params.txt          open_clip_train's log and resolved arguments
    checkpoints/epoch_<k>.pt     open_clip_train checkpoints (resume with the same call)
    model.pt                     final weights only ({"state_dict": ...}), weights_only-loadable
    train.json                   preset, arguments, samples seen, steps, loss, timings, data lineage,
                                 world size and per-rank throughput
    ranks/rank_<r>.json          each rank's samples and seconds in open_clip's epoch loop
    torchrun-node<n>.log         torchrun's and the ranks' console output (several ranks only)

Several ranks (``launch``): see :mod:`curate.train.launch`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, NamedTuple

from curate.errors import CurateError
from curate.manifest import code_version, stable_hash
from curate.tables import atomic_write_bytes
from curate.train.args import (_device_and_precision, build_args, plan_steps,  # noqa: F401 - re-exported
                               with_batch_size)
from curate.train.launch import (Launch, align_resume_checkpoint, clear_rank_records, distributed_args,
                                 per_rank_batch, rank_environment, rank_record, read_rank_records,
                                 torchrun_command, write_rank_record)
from curate.train.open_clip_main import run_open_clip_train
from curate.train.presets import get_preset
from curate.train.progress import TrainProgress


class TrainError(CurateError):
    """Training could not start or did not finish."""


def resolve_train_data(data: str | os.PathLike | list) -> dict:
    """Shard list of a training input: a reshard output folder, a folder of .tar files, one
    .tar, a list of .tar paths or a brace/``::`` pattern. Returns urls (open_clip string),
    shard count, sample count (0 when unknown) and the reshard meta when there is one."""
    from curate.reshard import shard_urls

    from curate import storage

    meta = None
    if isinstance(data, (list, tuple)):
        paths = [str(p) for p in data]
        total = 0
    elif storage.is_uri(data) and "{" not in str(data) and "::" not in str(data):
        # shards on object storage: listed through curate.storage, read through ``pipe:`` URLs
        if storage.is_dir(data):
            paths, total = shard_urls(str(data))
            if storage.exists(storage.join(str(data), "meta.json")):
                meta = json.loads(storage.read_bytes(storage.join(str(data), "meta.json")))
        elif storage.is_file(data):
            paths, total = [str(data)], 0
        else:
            raise TrainError(f"training data {data} does not exist")
    else:
        p = Path(data)
        if p.is_dir():
            paths, total = shard_urls(p)
            if (p / "meta.json").exists():
                meta = json.loads((p / "meta.json").read_text())
        elif p.is_file():
            paths = [str(p)]
            total, meta = _sizes_beside(paths)
        elif "{" in str(data) or "::" in str(data):
            import webdataset as wds

            paths = list(wds.shardlists.expand_urls(str(data)))
            total, meta = _sizes_beside(paths)
        else:
            raise TrainError(f"training data {data} does not exist")
    def on_store(x: str) -> bool:  # webdataset opens http(s), pipe: and local paths itself
        return storage.is_uri(x) and not x.startswith(("http://", "https://", "pipe:"))

    missing = [x for x in paths if ("://" not in x and not os.path.exists(x)) or (on_store(x) and not storage.exists(x))]
    if missing:
        raise TrainError(f"training shard {missing[0]} does not exist ({len(missing)} missing)")
    from curate.storage_cat import pipe_url

    if meta is not None and meta.get("counts", {}).get("written", 1) == 0:
        raise TrainError(f"{data}: the reshard wrote no samples")
    if meta is None and total == 0:
        _require_a_usable_sample(paths, data)
    paths = [pipe_url(x) if on_store(x) else x for x in paths]  # other stores stream through curate.storage
    where = None
    if not isinstance(data, (list, tuple)):  # recorded as a path that means the same from anywhere
        where = str(data) if "://" in str(data) or str(data).startswith("pipe:") else str(Path(data).resolve())
    return {"urls": "::".join(paths), "shards": len(paths), "samples": total, "reshard": meta, "path": where}


def _sizes_beside(paths: list[str]) -> tuple[int, dict | None]:
    """Local shards named one by one (a .tar, a brace pattern) in one folder: their sample total
    from the folder's sizes.json or _stats.json files (0 when any is unknown), and the folder's
    reshard meta when they are all of its shards (some of them are not the whole subset)."""
    from curate.reshard.output import shard_sizes

    folders = {str(Path(x).parent) for x in paths if "://" not in x and not x.startswith("pipe:")}
    if len(folders) != 1 or len(paths) != sum(1 for x in paths if "://" not in x):
        return 0, None
    folder = Path(folders.pop())
    names = [Path(x).name for x in paths]
    try:
        sizes = shard_sizes(folder, names)
    except CurateError:
        return 0, None
    total = 0 if any(v is None for v in sizes.values()) else sum(sizes.values())
    meta = None
    if (folder / "meta.json").exists():
        from curate.reshard.output import shard_names

        if set(shard_names(folder)) == set(names):
            meta = json.loads((folder / "meta.json").read_text())
    return total, meta


def _check_before_start(plan, pretrained: str | None) -> None:
    """What open_clip_train would refuse once started, refused in one line first: an unknown
    architecture (a traceback listing 180 names), and arguments its parser rejects (an extra
    argument after `--`: its message went to a silenced stderr, exit 2 with nothing said)."""
    import contextlib
    import io

    from curate.models.factory import check_model
    from open_clip_train.params import parse_args

    check_model(plan.cfg.model, pretrained)  # a tag with no reachable weights, a file that is no checkpoint
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            parse_args(list(plan.rank_argv))
    except SystemExit:
        lines = [ln for ln in said.getvalue().splitlines() if ln.strip()]
        why = lines[-1].split("error: ", 1)[-1] if lines else "its argument parser stopped"
        raise TrainError(f"open_clip_train refuses the arguments: {why}") from None


_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")  # the members open_clip_train reads as the image


def _require_a_usable_sample(paths: list[str], data) -> None:
    """Shards of unknown content (no reshard meta, no sizes.json): some sample must have an
    image and a ``.txt`` caption, else open_clip_train's resampling draws shards forever and
    never forms a batch (it hung with no message). Local shards' tar headers are read in order
    until one such sample is found (the first, normally); shards on a store or behind a URL are
    left to open_clip_train."""
    import tarfile

    local = [p for p in paths if "://" not in p and not p.startswith("pipe:")]
    if len(local) != len(paths):
        return
    unreadable: list[str] = []
    for p in local:
        seen: dict[str, set] = {}
        try:
            with tarfile.open(p, mode="r|*") as tf:
                for m in tf:
                    if not m.isfile() or "." not in m.name:
                        continue
                    key, ext = m.name.split(".", 1)
                    exts = seen.setdefault(key, set())
                    exts.add(ext.lower())
                    if "txt" in exts and exts & set(_IMAGE_EXTS):
                        return
        except (OSError, tarfile.TarError) as e:
            unreadable.append(f"{p} ({e})")  # a damaged shard: open_clip_train skips it too
    if len(unreadable) == len(local):  # no archive at all: say that, not that its samples lack captions
        raise TrainError(f"{data}: no shard is a readable tar archive (the first: {unreadable[0]})")
    raise TrainError(f"{data}: no sample in its {len(local)} shard(s) has an image ({', '.join(_IMAGE_EXTS)}) and a "
                     ".txt caption, which open_clip_train needs; it would wait for a batch forever"
                     + (f" ({len(unreadable)} not readable as tar, the first: {unreadable[0]})" if unreadable else ""))


_LOSS_RE = re.compile(r"Contrastive_loss: ([0-9.eE+-]+) \(([0-9.eE+-]+)\)")


def _losses(log_path: Path) -> list[float]:
    if not log_path.exists():
        return []
    return [float(m.group(1)) for m in _LOSS_RE.finditer(log_path.read_text(errors="replace"))]


class _RunPlan(NamedTuple):
    """What a training call resolves before anything runs."""

    cfg: Any  # the preset with this call's overrides
    data_info: dict
    device: str
    precision: str
    rank_batch: int
    global_batch: int
    steps: dict
    config_hash: str
    rank_argv: list[str]


def _plan_run(data, output: Path, preset: str, seed: int, samples_seen, batch_size, lr, warmup, checkpoints, model,
              pretrained, workers: int, device, precision, extra_args, launch: Launch, local_loss) -> _RunPlan:
    """The preset, the data, the device and the open_clip_train arguments of each rank."""
    cfg = get_preset(preset, samples_seen=samples_seen, batch_size=batch_size, lr=lr, warmup=warmup,
                     checkpoints=checkpoints, model=model, local_loss=local_loss)
    data_info = resolve_train_data(data)
    dev, prec = _device_and_precision(device, precision)
    rank_batch = per_rank_batch(cfg.batch_size, launch.world_size, launch.accum_freq)
    global_batch = rank_batch * launch.world_size * launch.accum_freq
    log_every = max(1, min(50, plan_steps(cfg.samples_seen, global_batch, cfg.checkpoints,
                                          workers)["steps_per_epoch"] // 4))
    # the hash covers what decides the result, not how many ranks compute it: resumable anywhere
    argv, steps = build_args(data_info, cfg, output, seed, workers, dev, prec, pretrained, log_every=log_every,
                             extra_args=extra_args, batch_size=global_batch)
    # ... and the data: a reshard's plan hash digests its rows, so shards resharded from another
    # subset under the same folder are another run (it returned the old one, with its lineage)
    identity = {"argv": argv, "preset": {k: v for k, v in cfg.to_dict().items() if k != "local_loss"}}
    if (data_info.get("reshard") or {}).get("plan_hash"):
        identity["reshard_plan_hash"] = data_info["reshard"]["plan_hash"]
    config_hash = stable_hash(identity)
    rank_argv = with_batch_size(argv, rank_batch) + distributed_args(cfg.local_loss, launch)
    return _RunPlan(cfg, data_info, dev, prec, rank_batch, global_batch, steps, config_hash, rank_argv)


def train(data: str | os.PathLike | list, output: str | os.PathLike, preset: str = "tiny", *,
          seed: int = 0, samples_seen: int | None = None, batch_size: int | None = None,
          lr: float | None = None, warmup: int | None = None, checkpoints: int | None = None,
          model: str | None = None, pretrained: str | None = None, workers: int = 0,
          device: str | None = "auto", precision: str | None = "auto", threads: int | None = None,
          extra_args: list[str] | tuple = (), overwrite: bool = False, verbose: bool = False,
          launch: Launch | None = None, local_loss: bool | None = None, progress: bool = True,
          progress_every_s: float = 10.0) -> dict:
    """Train a CLIP model on WebDataset shards with a scale preset; returns ``train.json``'s content.

    Same call again: returns the finished run, or resumes an interrupted one from its latest
    checkpoint (with any world size). A different configuration in a used folder needs
    ``overwrite=True``. ``launch`` (a :class:`~curate.train.launch.Launch`): several ranks under
    torchrun; on a node other than 0 the call returns ``{"node_rank", "world_size", "output"}``
    once its ranks finished, and node 0 writes the run's files. ``progress``: a live line (step,
    samples seen, loss, samples/s, ETA) on stderr, verbose or not (:mod:`curate.train.progress`);
    a plain line every ``progress_every_s`` seconds when stderr is not a terminal.
    """
    output = Path(output).resolve()
    launch = launch or Launch()
    from curate.models.factory import checkpoint_file

    # a starting checkpoint on a store: open_clip_train opens a local file (the URI is recorded)
    plan = _plan_run(data, output, preset, seed, samples_seen, batch_size, lr, warmup, checkpoints, model,
                     checkpoint_file(pretrained), workers, device, precision, extra_args, launch, local_loss)
    _check_before_start(plan, pretrained)  # before the folder is marked: a corrected command runs in it
    info_path = output / "train.json"
    if info_path.exists():
        old = json.loads(info_path.read_text())
        if old.get("config_hash") == plan.config_hash and Path(old.get("checkpoint", "")).exists():
            if launch.node_rank != 0:
                return _node_result(launch, output)
            _link_training(old, plan, info_path, seed)  # a subset rewritten since may have lost it
            return old
    if launch.node_rank == 0:
        _prepare_run_folder(output, plan.config_hash, overwrite)
        clear_rank_records(output)
        if launch.uses_torchrun:
            align_resume_checkpoint(output / "checkpoints", distributed=True)

    t0 = time.perf_counter()
    live = (TrainProgress(output / "out.log", plan.steps["steps_per_epoch"], plan.global_batch, plan.steps["epochs"],
                          every_s=progress_every_s)
            if progress and launch.node_rank == 0 else contextlib.nullcontext())
    with live:
        rc = _run_ranks(launch, plan.rank_argv, output, plan.device, threads, verbose)
    if launch.uses_torchrun and launch.node_rank != 0:
        return _node_result(launch, output)
    wall = time.perf_counter() - t0
    final = output / "checkpoints" / f"epoch_{plan.steps['epochs']}.pt"
    if rc == -1 or not final.exists():
        raise TrainError(f"open_clip_train did not finish (see {output / 'out.log'}); expected {final}")
    model_path = _save_final_weights(final, output / "model.pt", plan.cfg.model)
    info = _train_record(plan, output, pretrained, seed, model_path, final, wall, launch)
    atomic_write_bytes(info_path, (json.dumps(info, indent=2, sort_keys=True, default=str) + "\n").encode())
    _link_training(info, plan, info_path, seed)
    return info


def _link_training(info: dict, plan: _RunPlan, info_path: Path, seed: int) -> None:
    link_to_subset(info, "trainings", {"train_json": str(info_path), "checkpoint": str(info["checkpoint"]),
                                        "preset": plan.cfg.name, "seed": seed,
                                        "samples_seen": plan.steps["samples_seen"]},
                   replace_on="train_json")


def _train_record(plan: _RunPlan, output: Path, pretrained: str | None, seed: int, model_path: Path, final: Path,
                  wall: float, launch: Launch) -> dict:
    """``train.json``: the preset, data lineage, steps, losses, timings, ranks and arguments."""
    ranks = read_rank_records(output)
    steps = plan.steps
    # what this launch trained (a resumed run trained only the epochs after its checkpoint)
    launched = sum(int(r.get("samples") or 0) for r in ranks) if ranks else steps["samples_seen"]
    return {
        "preset": plan.cfg.to_dict(), "model": plan.cfg.model, "pretrained": pretrained, "seed": seed,
        "device": plan.device, "precision": plan.precision,
        **_data_and_steps(plan.data_info, steps, _losses(output / "out.log")),
        "checkpoint": str(model_path),
        "train_checkpoint": str(final),
        "wall_s": round(wall, 2),
        "samples_this_launch": launched,
        "samples_per_s": round(launched / wall, 1) if wall > 0 else None,
        "world_size": launch.world_size, "launch": launch.to_dict(),
        "global_batch": plan.global_batch, "per_rank_batch": plan.rank_batch,
        "ranks": ranks,  # this launch's ranks: epochs trained, samples, seconds in the epoch loop
        "train_samples_per_s": _loop_throughput(ranks),
        "argv": plan.rank_argv, "config_hash": plan.config_hash, "code": code_version(),
    }


def _run_ranks(launch: Launch, rank_argv: list[str], output: Path, dev: str, threads: int | None,
               verbose: bool) -> int | None:
    """open_clip_train on this node: torchrun for several ranks, else in this process."""
    if launch.uses_torchrun:
        return _launch_torchrun(launch, rank_argv, output, dev, threads, verbose)
    epochs: list[dict] = []
    rc = run_open_clip_train(rank_argv, threads, verbose, epochs=epochs)
    if rc != -1:
        write_rank_record(output, rank_record(0, 0, 1, dev, epochs))
    return rc


def _save_final_weights(final: Path, path: Path, arch: str) -> Path:
    """The last open_clip_train checkpoint's weights alone, loadable with ``weights_only``."""
    import torch

    from curate.models import save_checkpoint

    ckpt = torch.load(final, map_location="cpu", weights_only=True)  # proves the weights_only contract
    sd = ckpt["state_dict"]
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}

    class _Weights:  # save_checkpoint wants an object with state_dict()
        def state_dict(self):
            return sd

    return save_checkpoint(_Weights(), path, arch=arch, epoch=ckpt.get("epoch"))


def _data_and_steps(data_info: dict, steps: dict, losses: list[float]) -> dict:
    """train.json's data lineage, step plan and first/last loss."""
    reshard_meta = data_info["reshard"] or {}
    return {
        "data": {"path": data_info["path"], "shards": data_info["shards"], "samples": data_info["samples"],
                 "dataset": reshard_meta.get("dataset"), "subset": reshard_meta.get("subset"),
                 "reshard_plan_hash": reshard_meta.get("plan_hash"),
                 "subset_fingerprint": reshard_meta.get("subset_fingerprint")},
        "samples_seen": steps["samples_seen"],
        "steps": steps["steps"],
        "epochs": steps["epochs"],
        "warmup": steps["warmup"],
        "passes_over_data": (round(steps["samples_seen"] / data_info["samples"], 3)
                             if data_info["samples"] else None),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
    }


def _prepare_run_folder(output: Path, config_hash: str, overwrite: bool) -> None:
    """Node 0's check of the run folder (another run? overwrite?), then the hash of this one.
    Other nodes' ``torchrun-node<R>.log`` files do not make the folder used: they may be
    written before node 0 gets here."""
    def ours(p: Path) -> bool:
        return not (p.name.startswith("torchrun-node") and p.name != "torchrun-node0.log")

    used = [p for p in output.iterdir() if ours(p)] if output.exists() else []
    if used:
        prev = output / "_config_hash"
        same = prev.exists() and prev.read_text().strip() == config_hash
        if overwrite:
            import shutil

            for p in used:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        elif not same:
            raise TrainError(f"{output} holds another training run (other arguments, preset or shards); pass "
                             f"--overwrite or choose another output folder")
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output / "_config_hash", config_hash.encode())


def _launch_torchrun(launch: Launch, rank_argv: list[str], output: Path, device: str, threads: int | None,
                     verbose: bool) -> int:
    """torchrun for this node's ranks; their console output goes to ``torchrun-node<R>.log``."""
    import subprocess

    cmd = torchrun_command(launch, ["--output", str(output), *(["--threads", str(threads)] if threads else []),
                                    *(["--verbose"] if verbose else []), "--", *rank_argv])
    output.mkdir(parents=True, exist_ok=True)
    log = output / f"torchrun-node{launch.node_rank}.log"
    with open(log, "ab") as f:
        f.write((" ".join(cmd) + "\n").encode())
        f.flush()
        sink = {} if verbose else {"stdout": f, "stderr": subprocess.STDOUT}
        rc = subprocess.run(cmd, env=rank_environment(launch, device, threads), **sink).returncode
    if rc != 0:
        also = f" and {output / 'out.log'}" if (output / "out.log").exists() else ""
        raise TrainError(f"torchrun ({launch.world_size} ranks) exited with code {rc} on node {launch.node_rank}; "
                         f"see {log}{also}")
    return rc


def _node_result(launch: Launch, output: Path) -> dict:
    return {"node_rank": launch.node_rank, "world_size": launch.world_size, "output": str(output)}


def _loop_throughput(ranks: list[dict]) -> float | None:
    """All ranks' samples over the slowest rank's time in the epoch loop."""
    slowest = max((r["train_s"] for r in ranks), default=0)
    return round(sum(r["samples"] for r in ranks) / slowest, 1) if slowest > 0 else None


def link_to_subset(info: dict, key: str, entry: dict, replace_on: str | None = None) -> None:
    """Record an artifact in the trained subset's manifest, when the data came from a reshard."""
    data = info.get("data") or {}
    if not data.get("dataset") or not data.get("subset"):
        return
    from curate.subset import append_subset_manifest
    from curate.tables import Dataset
    from curate.tables.fingerprint import table_fingerprint

    ds = Dataset(data["dataset"])
    try:
        now = table_fingerprint(ds, f"subsets/{data['subset']}") if ds.has_table(f"subsets/{data['subset']}") else None
        if data.get("subset_fingerprint") is not None and now != data["subset_fingerprint"]:
            # shards resharded since that was recorded
            logging.getLogger(__name__).warning(
                "not linking %s into subset %s: its uids changed since the shards were made from it (a later "
                "run wrote that name); this model was trained on the earlier subset", key, data["subset"])
            return
        # the uids it was made from: a rewrite of the same uids keeps the entry (curate.subset)
        entry = {**entry, "subset_fingerprint": now}
        append_subset_manifest(ds, data["subset"], key, entry, replace_on=replace_on)
    except (OSError, CurateError) as e:  # the dataset may have moved; the run itself stands
        logging.getLogger(__name__).warning("could not link %s into subset %s: %s", key, data["subset"], e)
