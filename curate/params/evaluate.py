"""Parameters of ``curate eval``: a checkpoint's zero-shot and retrieval evaluation."""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from curate.params import JobParams, cli_extra


class EvalParams(JobParams):
    checkpoint: Optional[str] = Field(None, description="Checkpoint (a run's model.pt or checkpoints/epoch_k.pt) or a "
                                      "run folder, a path or URI; omit with --model for random weights.",
                                      json_schema_extra=cli_extra(argument=True))
    model: Optional[str] = Field(None, description="Architecture (default: from the run's train.json); also NAME:TAG, "
                                 "a checkpoint file, or an embeddings id such as curate-tiny__random-seed0.")
    zeroshot: list[str] = Field([], description="Labelled image folder FOLDER/<class>/*.jpg (a path or URI: "
                                "s3://bucket/evals/cifar); repeatable.", json_schema_extra=cli_extra("-z"))
    retrieval: list[str] = Field([], description="Image-caption set: a folder with captions.csv (image,caption) and "
                                 "images/, or the csv (a path or URI); repeatable.", json_schema_extra=cli_extra("-r"))
    templates: Optional[str] = Field(None, description="default, openai, simple or a file (a path or URI) with one "
                                     "{} template per line.")
    max_per_class: Optional[int] = Field(None, ge=1, description="Zero-shot: first N images per class.")
    images: Optional[str] = Field(None, description="Retrieval: a file listing the image names to use (a held-out "
                                  "split; a path or URI).")
    output: Optional[str] = Field(None, description="Results JSON, a path or URI (default <checkpoint stem>.eval.json "
                                  "beside it).", json_schema_extra=cli_extra("-o"))
    device: str = Field("auto", description="auto (cuda if visible, else cpu), cpu, cuda, cuda:N.")
    batch_size: int = Field(256, ge=1, description="Images or captions per forward pass.")
    seed: int = Field(0, description="Seed of the random weights when no checkpoint is given.")
