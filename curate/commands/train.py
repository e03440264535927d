"""``curate train``: the reference trainer (open_clip_train with a scale preset)."""

from __future__ import annotations

import typer

from curate.commands._jobcli import Common, JobRun, job_command
from curate.params.train import TrainParams


def train_cmd(run: JobRun, p: TrainParams) -> None:
    from curate.names import check_folder_output
    from curate.train import train

    check_folder_output(p.output, "--output")  # the run folder
    info = train(extra_args=run.extra_args, **p.job_kwargs())
    if "model" not in info:  # a node other than 0: node 0 writes the run's files
        typer.echo(f"train: node {info['node_rank']}'s ranks finished ({info['world_size']} ranks in all); "
                   f"node 0 writes {info['output']}")
        return
    typer.echo(f"train: {info['model']} saw {info['samples_seen']} samples in {info['steps']} steps "
               f"on {info['world_size']} rank(s) ({info['wall_s']} s, loss {info['loss_first']} -> {info['loss_last']}); "
               f"weights: {info['checkpoint']}")
    asked = (info.get("preset") or {}).get("samples_seen")
    if asked and info["samples_seen"] > asked:  # open_clip_train's rounding, not a budget of ours
        typer.echo(f"note: {info['samples_seen'] - asked:,} samples past the {asked:,} asked: open_clip_train runs "
                   f"whole batches, and with --workers a multiple of the workers' count of them per checkpoint; "
                   f"compare runs at the samples seen train.json records")


def register(app: typer.Typer) -> None:
    app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(job_command(
        TrainParams, train_cmd, app_name="curate-train",
        common=Common(None, dataset=False, subset=False, output=False, engine=False, storage=True, lock_first=False,
                      extra_args=True),
        help="Train CLIP on shards at a fixed samples-seen budget. Extra arguments after `--` go to open_clip_train "
        "unchanged."))
