"""``curate train``: the reference trainer (open_clip_train with a scale preset)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from curate.commands._common import StorageOpt, use_storage_options


def register(app: typer.Typer) -> None:
    @app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def train_cmd(
        ctx: typer.Context,
        data: str = typer.Argument(..., help="Training shards: a `curate reshard` folder, a folder of .tar, "
                                             "one .tar or a brace pattern."),
        output: str = typer.Option(..., "--output", "-o", help="Run folder, a path or URI (logs, checkpoints, model.pt, "
                                                             "train.json). DATA may be a URI (s3://bucket/shards)."),
        preset: str = typer.Option("tiny", "--preset", "-p", help="tiny, small, medium, large or xlarge."),
        seed: int = typer.Option(0, "--seed"),
        samples_seen: Optional[int] = typer.Option(None, "--samples-seen", help="Override the preset's budget."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Override the global batch size."),
        lr: Optional[float] = typer.Option(None, "--lr"),
        warmup: Optional[int] = typer.Option(None, "--warmup", help="Warmup steps."),
        checkpoints: Optional[int] = typer.Option(None, "--checkpoints", help="Checkpoints saved over training."),
        model: Optional[str] = typer.Option(None, "--model", help="Override the preset's architecture."),
        pretrained: Optional[str] = typer.Option(None, "--pretrained", help="Start from a tag or checkpoint."),
        workers: int = typer.Option(0, "--workers", help="Data loader processes (0: load in the training process)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
        precision: str = typer.Option("auto", "--precision", help="auto (amp on GPU, fp32 on CPU) or an "
                                                                  "open_clip_train precision."),
        threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace another run in --output."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Show open_clip_train's log on the console."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="A live line: step, samples seen, "
                                      "loss, samples/s, ETA (verbose or not)."),
        progress_every: float = typer.Option(10.0, "--progress-every", help="Seconds between progress lines when "
                                             "stderr is not a terminal (a terminal gets one updating line)."),
        nproc_per_node: int = typer.Option(1, "--nproc-per-node", help="Ranks on this node (GPUs; on CPU, gloo "
                                                                       "processes). Above 1: torchrun."),
        nnodes: int = typer.Option(1, "--nnodes", help="Nodes in the run (run the same command on each)."),
        node_rank: int = typer.Option(0, "--node-rank", help="This node's rank; node 0 writes the run's files."),
        master_addr: Optional[str] = typer.Option(None, "--master-addr", help="Node 0's address (needed with "
                                                                              "--nnodes > 1)."),
        master_port: int = typer.Option(29500, "--master-port", help="Node 0's rendezvous port."),
        accum_freq: int = typer.Option(1, "--accum-freq", help="Gradient accumulation: per-rank batch = global "
                                                               "batch // (world size x accum freq)."),
        local_loss: Optional[bool] = typer.Option(None, "--local-loss/--global-loss", help="With several ranks: "
                                                  "--local-loss --gather-with-grad (default: the preset's; on for "
                                                  "DataComp's scales)."),
        storage_option: list[str] = StorageOpt,
    ) -> None:
        """Train CLIP on shards at a fixed samples-seen budget. Extra arguments after `--` go to
        open_clip_train unchanged."""
        from curate.train import Launch, train

        use_storage_options(storage_option)  # DATA on a store: its pipe: readers inherit the settings

        launch = Launch(nproc_per_node=nproc_per_node, nnodes=nnodes, node_rank=node_rank, master_addr=master_addr,
                        master_port=master_port, accum_freq=accum_freq)
        info = train(data, output, preset, seed=seed, samples_seen=samples_seen, batch_size=batch_size, lr=lr,
                     warmup=warmup, checkpoints=checkpoints, model=model, pretrained=pretrained, workers=workers,
                     device=device, precision=precision, threads=threads, extra_args=list(ctx.args),
                     overwrite=overwrite, verbose=verbose, launch=launch, local_loss=local_loss,
                     progress=progress, progress_every_s=progress_every)
        if "model" not in info:  # a node other than 0: node 0 writes the run's files
            typer.echo(f"train: node {info['node_rank']}'s ranks finished ({info['world_size']} ranks in all); "
                       f"node 0 writes {info['output']}")
            return
        typer.echo(f"train: {info['model']} saw {info['samples_seen']} samples in {info['steps']} steps "
                   f"on {info['world_size']} rank(s) ({info['wall_s']} s, loss {info['loss_first']} -> {info['loss_last']}); "
                   f"weights: {info['checkpoint']}")
