"""``curate scorer``: train a data-filtering network (DFN) on a trusted seed set; list scorers."""

from __future__ import annotations

import json

import typer

from curate.commands._jobcli import Common, JobRun, job_command
from curate.params import JobParams
from curate.params.scorer import ScorerTrainCommandParams, ScorerTrainParams

scorer_app = typer.Typer(help="Scorers: filtering CLIP models (DFNs) trained on a seed set you trust, used by "
                              "name with `curate embed DS --model NAME`.", no_args_is_help=True)


def train(run: JobRun, p: ScorerTrainCommandParams) -> None:
    from curate.progress import info
    from curate.tables import Dataset
    from curate.train import Launch
    from curate.train.scorer import seed_kind

    # the recipe stage `kind: scorer` takes the same parameters (ScorerTrainParams), checked before a JVM starts
    from curate import storage

    if p.output is not None:
        from curate.names import check_folder_output

        check_folder_output(p.output, "--output")  # the scorer folder
    ds = Dataset(run.dataset)  # a URI: the scorer is made locally and uploaded (curate.train.scorer)
    executor = run.executor() if storage.is_dir(ds.root) and seed_kind(ds, p.seed_set) == "subset" else None
    m = p.train(ds, executor, verbose=p.verbose, extra_args=run.extra_args,
              launch=Launch(nproc_per_node=p.nproc_per_node), progress_every_s=p.progress_every)
    sd = m["seed_set"]
    info(f"scorer {m['name']}: {m['arch']} trained on {sd['kind']} seed set {sd['source']} "
         f"({sd.get('samples') or '?'} pairs), {m['samples_seen']} samples seen, loss {m['loss_first']} -> "
         f"{m['loss_last']}")
    info(f"use it: curate embed {run.dataset} --model {m['name'] if p.output is None else p.output}   "
         f"(embeddings/{m['model_id']})")


scorer_train = job_command(
    ScorerTrainCommandParams, train, job_model=ScorerTrainParams, app_name="curate-scorer",
    common=Common(None, dataset_help="Dataset folder; the scorer goes to DATASET/scorers/NAME/.", subset=False,
                  output=False, lock_first=False, extra_args=True),
    help="Train a DFN on SEED_SET with the reference trainer; it then scores the pool by CLIP score: "
    "`curate embed DATASET --model NAME`. Extra arguments after `--` go to open_clip_train. "
    "--engine/--master matter only for a subset seed set (it is resharded).")
scorer_app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(
    scorer_train)


class ScorerListParams(JobParams):
    """``curate scorer list`` has no parameters of its own."""


def scorer_list(run: JobRun, p: ScorerListParams) -> None:
    from curate import storage
    from curate.errors import DatasetError
    from curate.models.scorers import list_scorers, read_scorer

    if not storage.is_dir(run.dataset):  # said, as `scorer train` says it (an empty listing before)
        raise DatasetError(f"dataset folder {run.dataset} does not exist")
    names = list_scorers(run.dataset)
    if not names:
        from curate.progress import info

        info(f"no scorers in {storage.join(run.dataset, 'scorers')} (train one with `curate scorer train`)")
    for n in names:
        s = read_scorer(storage.join(run.dataset, "scorers", n))  # a URI dataset too
        print(json.dumps({"name": s.name, "arch": s.arch, "model_id": s.model_id,
                          "seed_set": s.manifest.get("seed_set", {}).get("source"),
                          "samples_seen": s.manifest.get("samples_seen")}))


scorer_app.command("list")(job_command(
    ScorerListParams, scorer_list, app_name="curate-scorer-list",
    common=Common(None, dataset_help="Dataset folder.", subset=False, output=False, engine=False, lock_first=False),
    help="The scorers in DATASET/scorers/ (name, arch, seed set, embeddings id)."))


def register(app: typer.Typer) -> None:
    app.add_typer(scorer_app, name="scorer")
