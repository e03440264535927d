"""open_clip_train's argument list for a run: DataComp's ``train.py`` arguments from a scale
preset (webdataset input, sampling with replacement, ``--train-num-samples`` = samples seen /
checkpoints, ``--epochs`` = checkpoints) and the step arithmetic open_clip_train will apply."""

from __future__ import annotations

import math
from pathlib import Path

from curate.train.presets import Preset


def plan_steps(samples_seen: int, batch_size: int, checkpoints: int, workers: int = 0) -> dict:
    """Per-"epoch" sample count and the step arithmetic open_clip_train will apply: its batches
    per epoch rounded up to a multiple of the data-loader workers (each iterates as many;
    ``open_clip_train.data.get_wds_dataset``), so with ``workers`` > 1 it may see more than
    ``samples_seen``; the count returned is what it sees."""
    checkpoints = max(1, int(checkpoints))
    per_epoch = max(batch_size, samples_seen // checkpoints)
    loaders = max(1, int(workers))
    steps_per_epoch = math.ceil(math.ceil(per_epoch / batch_size) / loaders) * loaders
    return {"train_num_samples": per_epoch, "epochs": checkpoints, "steps_per_epoch": steps_per_epoch,
            "steps": steps_per_epoch * checkpoints,
            "samples_seen": steps_per_epoch * checkpoints * batch_size}


def _device_and_precision(device: str | None, precision: str | None) -> tuple[str, str]:
    import torch

    dev = device if device not in (None, "", "auto") else ("cuda" if torch.cuda.is_available() else "cpu")
    prec = precision if precision not in (None, "", "auto") else ("amp" if dev.startswith("cuda") else "fp32")
    return dev, prec


def build_args(data_info: dict, preset: Preset, output: Path, seed: int, workers: int, device: str,
               precision: str, pretrained: str | None = None, log_every: int = 50,
               extra_args: list[str] | tuple = (), batch_size: int | None = None) -> tuple[list[str], dict]:
    """open_clip_train's arguments for one process holding the whole global batch (the world-size
    independent form: ``launch`` turns ``--batch-size`` into the per-rank batch). ``batch_size``:
    the global batch actually used (the preset's, unless the world size does not divide it)."""
    batch_size = batch_size or preset.batch_size
    steps = plan_steps(preset.samples_seen, batch_size, preset.checkpoints, workers)
    warmup = min(preset.warmup, max(1, steps["steps"] // 2))  # a short --samples-seen keeps a real schedule
    args = [
        "--train-data", data_info["urls"],
        "--dataset-type", "webdataset",
        "--dataset-resampled",  # sampling with replacement: equal samples seen whatever the subset size
        "--train-num-samples", str(steps["train_num_samples"]),
        "--epochs", str(steps["epochs"]),
        "--batch-size", str(batch_size),
        "--lr", str(preset.lr),
        "--warmup", str(warmup),
        "--wd", str(preset.wd),
        "--beta2", str(preset.beta2),
        "--model", preset.model,
        "--seed", str(seed),
        "--workers", str(workers),
        "--device", device,
        "--precision", precision,
        "--logs", str(output.parent),
        "--name", output.name,
        "--save-frequency", "1",
        "--resume", "latest",
        "--log-every-n-steps", str(log_every),
        "--report-to", "",
    ]
    if preset.grad_checkpointing:
        args.append("--grad-checkpointing")
    if pretrained:
        args += ["--pretrained", pretrained]
    args += list(extra_args)
    steps["warmup"] = warmup
    return args, steps


def with_batch_size(argv: list[str], batch_size: int) -> list[str]:
    out = list(argv)
    out[out.index("--batch-size") + 1] = str(batch_size)
    return out
