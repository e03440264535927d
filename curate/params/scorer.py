"""Parameters of ``curate scorer train`` and of the ``scorer`` recipe stage: what a data-filtering
network (DFN) is trained from and how (one model, so the two never drift)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from pydantic import Field, field_validator

from curate.errors import CurateError
from curate.params import JobParams, cli_extra

if TYPE_CHECKING:
    import os

    from curate.tables import Dataset


class ScorerTrainParams(JobParams):
    """The scorer: its seed set, name, folder and training scale. In a recipe the stage's
    ``name`` (a reserved key) names the scorer."""

    seed_set: str = Field(description="Trusted pairs: a folder of images with a .txt caption beside each (cat.jpg + "
                          "cat.txt), a subset name of DATASET, a folder of WebDataset .tar shards, a .tar, a brace "
                          "pattern, or a file listing shard paths/URLs; a path or a URI (s3://, gs://).",
                          json_schema_extra=cli_extra("-s"))
    name: str = Field("dfn", description="Scorer name (`curate embed DS --model NAME`).",
                      json_schema_extra=cli_extra("-n"))
    output: Optional[str] = Field(None, description="Scorer folder (default DATASET/scorers/NAME); use it elsewhere "
                                  "with --model <folder>.", json_schema_extra=cli_extra("-o"))
    preset: str = Field("tiny", description="Training scale (tiny fits a laptop CPU).",
                        json_schema_extra=cli_extra("-p"))
    seed: int = Field(0, description="Training seed.")
    samples_seen: Optional[int] = Field(None, gt=0, description="Override the preset's budget.")
    batch_size: Optional[int] = Field(None, gt=0, description="Override the global batch size.")
    lr: Optional[float] = Field(None, gt=0, description="Override the preset's learning rate.")
    warmup: Optional[int] = Field(None, ge=0, description="Warmup steps.")
    arch: Optional[str] = Field(None, description="Override the preset's architecture.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1 ...")
    threads: Optional[int] = Field(None, gt=0, description="torch CPU threads.")
    overwrite: bool = Field(False, description="Retrain a scorer of this name.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        from curate.models.scorers import check_scorer_name

        try:
            return check_scorer_name(v)
        except CurateError as e:  # a ValueError, so a recipe reports it with its line
            raise ValueError(str(e)) from None

    def train(self, dataset: "Dataset | str | os.PathLike", executor=None, **runtime) -> dict:
        """``train_scorer`` with these parameters; ``runtime``: how it runs, not what it makes
        (verbose, launch, progress_every_s, extra_args)."""
        from curate.train.scorer import train_scorer

        return train_scorer(dataset, self.name, self.seed_set, preset=self.preset, output=self.output,
                            executor=executor, overwrite=self.overwrite, seed=self.seed,
                            samples_seen=self.samples_seen, batch_size=self.batch_size, lr=self.lr,
                            warmup=self.warmup, model=self.arch, device=self.device, threads=self.threads,
                            **runtime)


class ScorerTrainCommandParams(ScorerTrainParams):
    """How the command runs the trainer (not what it makes: a recipe stage has none of these)."""

    nproc_per_node: int = Field(1, ge=1, description="Ranks on this node (torchrun above 1).")
    verbose: bool = Field(False, description="Show open_clip_train's log on the console.",
                          json_schema_extra=cli_extra("-v"))
    progress_every: float = Field(10.0, ge=0, description="Seconds between progress lines when stderr is not a terminal "
                                  "(0: a line at every update).")
