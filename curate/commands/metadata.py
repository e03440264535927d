"""`curate metadata build|match|balance`: MetaCLIP metadata curation. Options come from the jobs'
models (curate/params/metaclip.py), which the `metaclip_balance` recipe stage shares."""

from __future__ import annotations


import typer

from curate.commands._common import open_executor, require_paths, require_tables
from curate.commands._jobcli import Common, JobRun, job_command
from curate.names import check_name, check_output_path
from curate.params.metaclip import (MetadataBalanceParams, MetadataBuildParams, MetadataMatchCommandParams,
                                     MetadataMatchParams)

metadata_app = typer.Typer(
    help="MetaCLIP curation: build a metadata list, match captions against it (exact MetaCLIP "
    "substring semantics), balance the pool with a per-entry cap t.",
    no_args_is_help=True,
)


def _languages(languages: str | None) -> list[str] | None:
    langs = [x.strip() for x in languages.split(",") if x.strip()] if languages is not None else None
    if langs is not None and not langs:
        raise typer.BadParameter("--languages needs at least one language")
    for lang in langs or []:
        check_name(lang, "--languages entry")
    return langs


def _check_output_kind(output: str, worldwide: bool) -> None:
    """OUTPUT is the kind the build writes: a file for one list, a folder of <lang>.json lists for
    --languages (a folder given for one list failed only at the end, after the bigrams were mined)."""
    from curate import storage
    from curate.errors import CurateError
    from curate.names import check_file_output

    if not worldwide:  # a folder is what --languages writes
        check_file_output(output, "OUTPUT", "metadata.json")
    if worldwide and storage.is_file(output):
        raise CurateError(f"OUTPUT {output} is a file; --languages writes a folder of <lang>.json lists")


def build(run: JobRun, p: MetadataBuildParams) -> None:
    from curate.metaclip.jobs import run_build
    from curate.progress import info
    from curate.tables import Dataset

    langs = _languages(p.languages)
    ds = Dataset(p.dataset) if p.dataset else None
    output = str(check_output_path(p.output, ds.root, "OUTPUT")) if ds is not None else p.output
    worldwide = langs is not None and langs != ["en"]
    if worldwide:
        from curate.metaclip.worldwide_build import check_languages

        check_languages(langs, p.lid_model)  # before any engine starts (and the model resolves)
    _check_output_kind(output, worldwide)
    if p.bigrams and ds is None and not p.bigram_corpus:
        info("metadata: no bigram corpus (--dataset or --bigram-corpus), so no bigrams")
    executor = None
    if p.bigrams and (ds is not None or p.bigram_corpus):  # bigrams are mined in the engine
        from curate.metaclip.build_job import corpus_rows

        rows = corpus_rows(p.bigram_corpus) if p.bigram_corpus else None  # --engine auto sizes the corpus
        executor = open_executor(run.engine, run.master, run.conf, run.app_name,
                                 dataset=None if p.bigram_corpus else p.dataset, rows=rows)
    result = run_build(output, dataset=ds, executor=executor, languages=langs, **p.job_kwargs())
    if "languages" in result:
        for lang, r in result["languages"].items():
            added = ", ".join(f"{k}: +{v['added']}" for k, v in r["sources"].items())
            info(f"metadata {lang}: {r['entries']:,} entries ({added})")
        info(f"metadata: {result['entries']:,} entries in {len(result['languages'])} languages -> {output}/")
        return
    added = ", ".join(f"{k}: +{v['added']}" for k, v in result["sources"].items())
    info(f"metadata: {result['entries']:,} entries -> {output} ({added})")


def match(run: JobRun, p: MetadataMatchCommandParams) -> None:
    from pathlib import Path

    from curate import storage
    from curate.metaclip.jobs import run_match
    from curate.progress import info

    require_tables(run.dataset, {"samples": "curate ingest"}, remote_ok=True)  # the dataset first: the README's order
    require_paths([p.metadata], "metadata file")
    metadata = storage.local_copy(p.metadata)  # a metadata list (or folder) on a store: copied locally
    if Path(metadata).is_dir():  # worldwide: check the lists and the language model before any engine
        from curate.filters.langid import resolve_model_path
        from curate.metaclip.worldwide import load_worldwide

        load_worldwide(metadata)
        resolve_model_path(p.lid_model)
    result = run_match(run.ds, metadata, run.executor(), params={"engine": run.engine, "master": run.master},
                       **p.job_kwargs())
    c = result["counts"]
    info(f"match: {c['samples']:,} samples, {c['matched']:,} matched, {c['unmatched']:,} unmatched, "
         f"{c['pairs']:,} matches over {c['entries_matched']:,} of {c['entries']:,} entries "
         f"({result['timings_s']['total']:.1f} s)")
    for lang, d in result.get("languages", {}).items():
        info(f"  {lang}: {d['samples']:,} captions, {d['matched']:,} matched, {d['pairs']:,} matches "
             f"over {d['entries_matched']:,} of {d['entries']:,} entries")


def _t_text(t: float) -> str:
    """A balancing threshold as printed: whole counts with separators, a fraction as it is."""
    return f"{t:,.0f}" if t >= 1 or t == 0 else f"{t:.3g}"


def balance(run: JobRun, p: MetadataBalanceParams) -> None:
    from curate.metaclip.jobs import run_balance
    from curate.progress import info

    require_tables(run.dataset, {"metadata_matches": "curate metadata match", "entry_counts": "curate metadata match"},
                   remote_ok=True)
    result = run_balance(run.ds, run.executor(), name=run.name, params={"engine": run.engine, "master": run.master},
                         **p.job_kwargs())
    c = result["counts"]
    t_eff = result["params"]["t_effective"]
    if t_eff < 1:  # e.g. --t-reference-pool scaled it down: few captions of any matched entry stay
        info(f"warning: the effective t is {_t_text(t_eff)} (below 1): an entry's captions are kept with "
             "probability t / matches, so most matched captions go; check --t and --t-reference-pool")
    removed = {k: v for k, v in c.items() if k not in ("input", "kept", "kept_total") and isinstance(v, int) and v}
    info(f"balance (t={_t_text(t_eff)}): {c['input']:,} in -> {c['kept_total']:,} kept"
         + ("; removed: " + ", ".join(f"{k} {v:,}" for k, v in sorted(removed.items(), key=lambda kv: -kv[1]))
            if removed else ""))
    if "languages" in result:
        info(f"  tail proportion p = {result['params']['tail_proportion']:.6g}")
        for r in result["languages"]:
            t_text = "-" if r.get("t") is None else _t_text(r["t"])
            info(f"  {r['lang']}: t={t_text}, {r['samples']:,} captions, {r['matched']:,} matched, "
                 f"{r['kept']:,} kept")


_POOL = dict(subset=False, output=False, storage=True)  # a job over the whole pool, in place (a URI too)

metadata_app.command("build")(job_command(
    MetadataBuildParams, build, app_name="curate-metadata-build",
    common=Common(None, dataset=False, subset=False, output=False, lock_first=False),
    help="Build a metadata list offline: numbers, WordNet, wordfreq, mined bigrams, user lists.\n\n"
    "Sources are concatenated in that order, repeats dropped (first one wins), so the same inputs always give the "
    "same file. Writes OUTPUT and OUTPUT.build.json (per-source counts)."))
metadata_app.command("match")(job_command(
    MetadataMatchCommandParams, match, job_model=MetadataMatchParams, app_name="curate-metadata-match",
    common=Common(None, dataset_help="Dataset folder or URI with a samples table.", **_POOL),
    help="Match every sample's text against the metadata (MetaCLIP v1 substring semantics).\n\n"
    "Writes DATASET/metadata_matches (uid, sorted entry ids), DATASET/entry_counts and "
    "DATASET/_runs/metadata-match.json; the metadata is copied to DATASET/metaclip/metadata.json."))
metadata_app.command("balance")(job_command(
    MetadataBalanceParams, balance, app_name="curate-metadata-balance",
    common=Common("metaclip", name_help="Subset and decisions run name: subsets/NAME, decisions/NAME.",
                  dataset_help="Dataset folder or URI with metadata_matches and entry_counts.", **_POOL),
    help="Balance the pool with a per-entry cap t (MetaCLIP), deterministically.\n\n"
    "A text is kept if, for one of its entries, its draw is below p = min(1, t / count); texts matching nothing "
    "are dropped (no_metadata_match), the rest not drawn are balanced_out.\n\n"
    "Writes subsets/NAME (uids.parquet, uids.npy, entry_distribution.json/.png), decisions/NAME, "
    "entry_balance/NAME and _runs/metadata-balance-NAME.json."))


def register(app: typer.Typer) -> None:
    app.add_typer(metadata_app, name="metadata")
