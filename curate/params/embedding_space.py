"""Parameters of the embedding-space jobs: cluster, dedup semantic/exact/near, prune dbp/ssp,
decontaminate. Each model is both ``curate <command>``'s options and the recipe stage's keys."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

from pydantic import AliasChoices, Field

from curate.params import JobParams, ModelSpec, Name, cli_extra

# a clustering's name when neither the command line nor the recipe gives one
DEFAULT_CLUSTERING = "kmeans"

Embedding = Literal["image", "text", "concat"]
Keep = Literal["hard", "easy", "random"]


def _embeddings_field(help: str):
    """``--embeddings`` (an embeddings table); ``--model`` is its old, deprecated spelling (it
    names an architecture elsewhere) and ``model`` its old recipe key."""
    return Field(None, description=help, validation_alias=AliasChoices("embeddings", "model"),
                 json_schema_extra=cli_extra("-m", deprecated=("--model",)))


def clusters_name(clusters: Optional[str], default: str = DEFAULT_CLUSTERING) -> str:
    return clusters or default


class ClusterParams(JobParams):
    k: int = Field(ge=1, description="Number of clusters.", json_schema_extra=cli_extra("-k"))
    embeddings: Optional[ModelSpec] = _embeddings_field(
        "Embeddings table id (embeddings/<id>), open_clip NAME[:TAG] or checkpoint it was embedded with; "
        "default: the only one (in a recipe: its embedding_model).")
    embedding: Embedding = Field("image", description="image, text or concat (both, normalised).")
    niter: int = Field(20, ge=1, description="k-means iterations.")
    seed: int = Field(0, description="Seed of the training sample and of k-means.")
    spherical: bool = Field(True, description="Spherical (cosine) k-means, as SemDeDup/DBP use; or plain L2.",
                            json_schema_extra=cli_extra(negative="--euclidean"))
    max_points_per_centroid: int = Field(256, ge=1, description="Training sample = k x this (FAISS's cap).")
    sample_size: Optional[int] = Field(None, ge=1, description="Training rows (default k x max-points).")
    max_sample_gb: float = Field(2.0, gt=0, description="Cap on the float32 training sample held by the driver "
                                 "(GiB); the sample never grows with the pool (docs/scale.md).")
    gpu: Literal["auto", "yes", "no"] = Field("auto", description="auto (faiss-gpu when present), yes or no.")

    job_arg_exclude: ClassVar[frozenset[str]] = frozenset({"embeddings", "clusters"})

    def job_kwargs(self) -> dict[str, Any]:
        kw = super().job_kwargs()
        kw["gpu"] = {"auto": "auto", "yes": True, "no": False}[self.gpu]
        kw["max_sample_bytes"] = int(kw.pop("max_sample_gb") * (1 << 30))
        return kw


class InClustersParams(JobParams):
    """What the jobs choosing within the clusters of a clustering share (semdedup, prune)."""

    clusters: Optional[Name] = Field(None, description=f"Clustering name (from `curate cluster --name`); default: "
                                     f"{DEFAULT_CLUSTERING}, in a recipe the recipe's own clustering "
                                     "(recipe-<recipe>).", json_schema_extra=cli_extra("-c"))
    keep: Keep = Field("hard", description="Which samples of a cluster (semdedup: of a duplicate group) survive: "
                       "hard (farthest from the centroid), easy (nearest) or random (seeded).")
    seed: int = Field(0, description="Seed for keep random.")

    job_arg_exclude: ClassVar[frozenset[str]] = frozenset({"clusters"})


class SemDeDupParams(InClustersParams):
    eps: float = Field(gt=0, le=1, description="Remove items with cosine > 1 - eps to an earlier item of their "
                       "cluster (above 0: at 0 the rule 'cosine > 1' is decided by float rounding; exact copies "
                       "are `curate dedup exact`'s, or a tiny eps such as 1e-6).")
    device: str = Field("auto", description="Where the similarity products run: auto (CUDA when torch sees one, "
                        "else NumPy), cpu, or a torch device such as cuda:1.")


class ExactDedupParams(JobParams):
    pass


class NearDedupParams(JobParams):
    threshold: float = Field(0.95, ge=-1, le=1, description="Cosine similarity at or above which two samples are "
                             "duplicates.")
    embeddings: Optional[ModelSpec] = _embeddings_field(
        "Embeddings table id, open_clip NAME[:TAG] or checkpoint (default: the only table; in a recipe: its "
        "embedding_model).")
    embedding: Embedding = Field("image", description="image, text or concat.")
    keep_by: Literal["uid", "clip_score"] = Field("uid", description="Survivor of a group: uid (smallest) or "
                                                  "clip_score (highest).")
    clusters: Optional[Name] = Field(None, description="Search an IVF index over this clustering's centroids "
                                     "(large pools); default: exact search over the whole input.",
                                     json_schema_extra=cli_extra("-c"))
    nprobe: int = Field(8, ge=1, description="Clusters probed per query with clusters.")

    job_arg_exclude: ClassVar[frozenset[str]] = frozenset({"embeddings"})


class PruneParams(InClustersParams):
    """SSP's parameters; DBP adds its own below."""

    keep_fraction: float = Field(gt=0, le=1, description="Fraction to keep: DBP of the input (N' = int(F*N)), "
                                 "SSP of every cluster.")


class DBPParams(PruneParams):
    temperature: float = Field(0.5, gt=0, description="Softmax temperature T over cluster complexity.")
    balance_ratio: float = Field(0.5, ge=0, le=1, description="Lower bound per cluster: min(int(N'/k * ratio), "
                                 "size - 1).")
    neighbors: int = Field(20, ge=1, description="Nearest other centroids averaged for d_inter.")

    job_arg_names: ClassVar[dict[str, str]] = {"neighbors": "n_neighbors"}


class DecontaminateParams(JobParams):
    eval: str = Field(description="Evaluation images: an image folder (embedded with the pool's model), a Parquet "
                      "file/folder with image_embedding, or a table name.")
    threshold: float = Field(0.9, ge=-1, le=1, description="Remove pool samples with cosine >= this to any eval "
                             "image.")
    embeddings: Optional[ModelSpec] = _embeddings_field(
        "Pool embeddings: table id, open_clip NAME[:TAG] or checkpoint (default: the only table; in a recipe: "
        "its embedding_model).")
    eval_model: Optional[str] = Field(None, description="open_clip model name for an image folder (default: the "
                                      "pool embeddings' model).", validation_alias=AliasChoices("eval_model",
                                                                                                "model_name"))
    eval_pretrained: Optional[str] = Field(None, description="Pretrained tag or checkpoint file for eval_model.",
                                           validation_alias=AliasChoices("eval_pretrained", "pretrained"))

    job_arg_names: ClassVar[dict[str, str]] = {"eval": "eval_source", "eval_model": "model_name",
                                               "eval_pretrained": "pretrained"}
    job_arg_exclude: ClassVar[frozenset[str]] = frozenset({"embeddings"})
