"""``curate scorer``: train a data-filtering network (DFN) on a trusted seed set; list scorers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from curate.commands._common import ConfOpt, EngineOpt, MasterOpt

scorer_app = typer.Typer(help="Scorers: filtering CLIP models (DFNs) trained on a seed set you trust, used by "
                              "name with `curate embed DS --model NAME`.", no_args_is_help=True)


@scorer_app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def scorer_train(
    ctx: typer.Context,
    dataset: str = typer.Argument(..., help="Dataset folder; the scorer goes to DATASET/scorers/NAME/."),
    seed_set: str = typer.Option(..., "--seed-set", "-s", help="Trusted pairs: a folder of images with a .txt "
                                 "caption beside each (cat.jpg + cat.txt), a subset name of DATASET, a folder of "
                                 "WebDataset .tar shards, a .tar, a brace pattern, or a file listing shard paths/URLs."),
    name: str = typer.Option("dfn", "--name", "-n", help="Scorer name (`curate embed DS --model NAME`)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Scorer folder (default DATASET/scorers/NAME); "
                                          "use it elsewhere with --model <folder>."),
    preset: str = typer.Option("tiny", "--preset", "-p", help="Training scale (tiny fits a laptop CPU)."),
    seed: int = typer.Option(0, "--seed"),
    samples_seen: Optional[int] = typer.Option(None, "--samples-seen", help="Override the preset's budget."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Override the global batch size."),
    lr: Optional[float] = typer.Option(None, "--lr"),
    warmup: Optional[int] = typer.Option(None, "--warmup", help="Warmup steps."),
    model: Optional[str] = typer.Option(None, "--arch", help="Override the preset's architecture."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads."),
    nproc_per_node: int = typer.Option(1, "--nproc-per-node", help="Ranks on this node (torchrun above 1)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Retrain a scorer of this name."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show open_clip_train's log on the console."),
    progress_every: float = typer.Option(10.0, "--progress-every", help="Seconds between progress lines when "
                                         "stderr is not a terminal."),
    master: Optional[str] = MasterOpt,
    conf: List[str] = ConfOpt,
    engine: str = EngineOpt,
) -> None:
    """Train a DFN on SEED_SET with the reference trainer; it then scores the pool by CLIP score:
    `curate embed DATASET --model NAME`. Extra arguments after `--` go to open_clip_train.
    --engine/--master matter only for a subset seed set (it is resharded)."""
    from curate.progress import info
    from curate.tables import Dataset
    from curate.train import Launch
    from curate.train.scorer import ScorerTrainParams, seed_kind

    # the recipe stage `kind: scorer` takes the same parameters; every check before a JVM starts
    params = ScorerTrainParams.checked(
        seed_set=seed_set, name=name, output=str(output) if output is not None else None, preset=preset, seed=seed,
        samples_seen=samples_seen, batch_size=batch_size, lr=lr, warmup=warmup, arch=model, device=device,
        threads=threads, overwrite=overwrite)
    from curate.commands._common import require_local

    require_local(dataset)  # a scorer is model files read by path (resolve_scorer); docs/storage.md
    ds = Dataset(dataset)
    executor = None
    if ds.root.is_dir() and seed_kind(ds, seed_set) == "subset":
        from curate.commands._common import open_executor

        executor = open_executor(engine, master, conf, "curate-scorer", dataset=dataset)
    m = params.train(ds, executor, verbose=verbose, extra_args=list(ctx.args),
                     launch=Launch(nproc_per_node=nproc_per_node), progress_every_s=progress_every)
    sd = m["seed_set"]
    info(f"scorer {m['name']}: {m['arch']} trained on {sd['kind']} seed set {sd['source']} "
         f"({sd.get('samples') or '?'} pairs), {m['samples_seen']} samples seen, loss {m['loss_first']} -> "
         f"{m['loss_last']}")
    info(f"use it: curate embed {dataset} --model {m['name'] if output is None else output}   "
         f"(embeddings/{m['model_id']})")


@scorer_app.command("list")
def scorer_list(dataset: str = typer.Argument(..., help="Dataset folder.")) -> None:
    """The scorers in DATASET/scorers/ (name, arch, seed set, embeddings id)."""
    from curate.models.scorers import list_scorers, read_scorer

    for n in list_scorers(dataset):
        s = read_scorer(Path(dataset) / "scorers" / n)
        print(json.dumps({"name": s.name, "arch": s.arch, "model_id": s.model_id,
                          "seed_set": s.manifest.get("seed_set", {}).get("source"),
                          "samples_seen": s.manifest.get("samples_seen")}))


def register(app: typer.Typer) -> None:
    app.add_typer(scorer_app, name="scorer")
