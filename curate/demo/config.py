"""The demo's settings and its scales (``default``: what `make demo` runs; ``tiny``: a smoke run)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class DemoConfig:
    workdir: Path
    pool_size: int = 3000
    pool_seed: int = 0
    seed_set: int = 2000          # clean pairs the DFN is trained on
    dfn_samples_seen: int = 8192  # at the tiny preset's batch (128): fewer leaves the scorer collapsed
    dfn_batch_size: int = 128
    samples_seen: int = 4096      # per baseline model: the same for every arm
    batch_size: int = 64          # baselines' batch
    seeds: tuple[int, ...] = (0, 1, 2)
    eval_per_class: int = 8
    retrieval_n: int = 300
    recipe: Path | None = None    # default: recipes/demo.yaml
    engine: str = "spark"
    master: str | None = "local[2]"
    threads: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["workdir"] = str(self.workdir)
        d["recipe"] = str(self.recipe) if self.recipe else None
        d["seeds"] = list(self.seeds)
        return d


SCALES: dict[str, dict[str, Any]] = {
    # the demo `make demo` runs: about 3 minutes on 2 idle CPU cores (164 s on 2026-12-05)
    "default": {},
    # a smoke run of every step (tests): a minute or two
    "tiny": dict(pool_size=240, seed_set=256, dfn_samples_seen=256, dfn_batch_size=32, samples_seen=128,
                 batch_size=32, eval_per_class=1, retrieval_n=24),
}
