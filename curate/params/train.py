"""Parameters of ``curate train``; ``job_kwargs()`` are ``curate.train.train``'s arguments,
its ``Launch`` (where the ranks run) made from the torchrun fields."""

from __future__ import annotations

from typing import Any, ClassVar, Optional

from pydantic import Field

from curate.params import JobParams, cli_extra

# the fields that are the library's Launch (torchrun's parameters and gradient accumulation)
LAUNCH_FIELDS = ("nproc_per_node", "nnodes", "node_rank", "master_addr", "master_port", "accum_freq")


class TrainParams(JobParams):
    data: str = Field(description="Training shards: a `curate reshard` folder, a folder of .tar, one .tar or a brace "
                      "pattern.", json_schema_extra=cli_extra(argument=True))
    output: str = Field(description="Run folder, a path or URI (logs, checkpoints, model.pt, train.json). DATA may be "
                        "a URI (s3://bucket/shards).", json_schema_extra=cli_extra("-o"))
    preset: str = Field("tiny", description="tiny, small, medium, large or xlarge.", json_schema_extra=cli_extra("-p"))
    seed: int = Field(0, description="open_clip_train's seed (initial weights, data order).")
    samples_seen: Optional[int] = Field(None, gt=0, description="Override the preset's budget.")
    batch_size: Optional[int] = Field(None, gt=0, description="Override the global batch size.")
    lr: Optional[float] = Field(None, gt=0, description="Override the preset's learning rate.")
    warmup: Optional[int] = Field(None, ge=0, description="Warmup steps.")
    checkpoints: Optional[int] = Field(None, ge=1, description="Checkpoints saved over training.")
    model: Optional[str] = Field(None, description="Override the preset's architecture.")
    pretrained: Optional[str] = Field(None, description="Start from a tag or checkpoint.")
    workers: int = Field(0, ge=0, description="Data loader processes (0: load in the training process).")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1 ...")
    precision: str = Field("auto", description="auto (amp on GPU, fp32 on CPU) or an open_clip_train precision.")
    threads: Optional[int] = Field(None, gt=0, description="torch CPU threads.")
    overwrite: bool = Field(False, description="Replace another run in --output.")
    verbose: bool = Field(False, description="Show open_clip_train's log on the console.",
                          json_schema_extra=cli_extra("-v"))
    progress: bool = Field(True, description="A live line: step, samples seen, loss, samples/s, ETA (verbose or not).",
                           json_schema_extra=cli_extra(negative="--no-progress"))
    progress_every: float = Field(10.0, ge=0, description="Seconds between progress lines when stderr is not a terminal (0: "
                                  "a line at every update; a terminal gets one updating line).")
    nproc_per_node: int = Field(1, ge=1, description="Ranks on this node (GPUs; on CPU, gloo processes). Above 1: torchrun.")
    nnodes: int = Field(1, ge=1, description="Nodes in the run (run the same command on each).")
    node_rank: int = Field(0, ge=0, description="This node's rank; node 0 writes the run's files.")
    master_addr: Optional[str] = Field(None, description="Node 0's address (needed with --nnodes > 1).")
    master_port: int = Field(29500, ge=1, le=65535, description="Node 0's rendezvous port.")
    accum_freq: int = Field(1, description="Gradient accumulation: per-rank batch = global batch // (world size x "
                            "accum freq).")
    local_loss: Optional[bool] = Field(None, description="With several ranks: --local-loss --gather-with-grad "
                                       "(default: the preset's; on for DataComp's scales).",
                                       json_schema_extra=cli_extra(negative="--global-loss"))

    job_arg_names: ClassVar[dict[str, str]] = {"progress_every": "progress_every_s"}
    job_arg_exclude: ClassVar[frozenset[str]] = frozenset(LAUNCH_FIELDS)

    def job_kwargs(self) -> dict[str, Any]:
        from curate.train import Launch

        return {**super().job_kwargs(), "launch": Launch(**{k: getattr(self, k) for k in LAUNCH_FIELDS})}
