"""Parameters of the ``sample`` recipe stage (a seeded uniform sample of the current subset)."""

from __future__ import annotations

from typing import Optional

from pydantic import Field, model_validator

from curate.params import JobParams


class SampleParams(JobParams):
    fraction: Optional[float] = Field(None, gt=0, le=1, description="Keep this fraction of the distinct input uids "
                                      "(rounded to the nearest whole uid).")
    count: Optional[int] = Field(None, ge=0, description="Keep this many distinct input uids (all of them if "
                                 "fewer).")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed of the uid hash that orders the draw (the same "
                      "seed, the same uids).")

    @model_validator(mode="after")
    def _one(self):
        if (self.fraction is None) == (self.count is None):
            raise ValueError("give exactly one of fraction or count")
        return self
