"""Parameters of ``curate embed``; ``options()`` is the job's ``EmbedOptions``."""

from __future__ import annotations

import re

from typing import Optional

from pydantic import Field, field_validator

from curate.params import JobParams, cli_extra


class EmbedParams(JobParams):
    # Defaults are the library's (EmbedOptions); tests/recipe/test_command_params.py keeps them equal.
    model: str = Field("ViT-B-32", description="open_clip model name (`curate models` lists them; curate-tiny and "
                       "curate-small are built in), NAME:TAG, a checkpoint file, an embeddings table id (embed again "
                       "with the same model), or a scorer: its name in DATASET/scorers/ or its folder (`curate scorer "
                       "train`).", json_schema_extra=cli_extra("-m"))
    pretrained: Optional[str] = Field(None, description="open_clip pretrained tag (e.g. laion2b_s34b_b79k) or a "
                                      "checkpoint file, local or a URI (s3://, gs://: copied to each machine's input "
                                      "cache). Without it: random weights from --seed.",
                                      json_schema_extra=cli_extra("-p"))
    device: str = Field("auto", description="auto (the Spark task's GPU, else cuda if visible, else cpu), cpu, cuda, "
                        "cuda:N.")
    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", value):  # torch would say so only on a worker, at length
            raise ValueError(f"device {value!r} is not one of auto, cpu, cuda, cuda:N")
        return value

    precision: str = Field("auto", description="auto, fp32, amp_bf16, amp_fp16, bf16, fp16.")
    batch_size: int = Field(0, ge=0, description="Images per forward pass (0: by the GPU's memory, 256-2048; 64 on CPU).")
    threads: int = Field(0, ge=0, description="JPEG decode threads per task (0: min(8, cores)).")
    seed: int = Field(0, description="Seed of the random weights when no --pretrained is given.")
    limit_shards: int = Field(0, ge=0, description="Embed only the first N image shards (0: all).")
    decode: str = Field("pil", description="pil: Pillow in CPU threads (open_clip's own transform); tensor: "
                        "torchvision batch JPEG decode + resize on the model's device (nvJPEG on CUDA), for GPUs that "
                        "the CPU cannot feed.")
    fast_decode: bool = Field(False, description="Decode large JPEGs at 1/2-1/8 scale (libjpeg DCT scaling, never "
                              "below the model's input size): several times less decode work, slightly different "
                              "pixels.")

    def options(self, model: str, pretrained: Optional[str], seed: int):
        """The job's ``EmbedOptions`` for the resolved model (name, weights and seed)."""
        from curate.embed.job import EmbedOptions

        kw = self.model_dump(exclude={"model", "pretrained", "seed"})
        return EmbedOptions(model=model, pretrained=pretrained, seed=seed, **kw)
