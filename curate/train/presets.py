"""Training scale presets. small..xlarge are DataComp's scales; tiny runs on 2 CPU cores.

The budget is samples seen, never epochs: every subset trained with one preset sees the same
number of samples (DataComp's rule), sampled with replacement from its shards, so a smaller
curated subset is compared with a larger raw pool at equal compute.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from curate.errors import CurateError


@dataclass(frozen=True)
class Preset:
    name: str
    model: str
    samples_seen: int
    batch_size: int  # global batch: per-rank batch = batch_size // (world size x accum freq), as DataComp
    lr: float
    warmup: int  # steps
    beta2: float = 0.98  # open_clip_train's default
    wd: float = 0.2  # open_clip_train's default, what DataComp trains with
    checkpoints: int = 5  # checkpoints saved over training (DataComp: 5); also the "epochs" open_clip sees
    # DataComp's train.py passes --local-loss --gather-with-grad --grad-checkpointing at every
    # scale: the loss and its gradient are the full global-batch loss's, with a (B/W x B) logit
    # block per rank instead of B x B, and activations recomputed in the backward pass
    local_loss: bool = False  # applied when world size > 1 (meaningless in one process)
    grad_checkpointing: bool = False
    doc: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


_DATACOMP = {"local_loss": True, "grad_checkpointing": True}

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny", model="curate-tiny", samples_seen=8_192, batch_size=128, lr=2e-3, warmup=8,
        checkpoints=1,
        doc="curate-tiny (32 px ViT, 2+2 layers, width 64): 64 steps, under a minute on 2 CPU cores"),
    "small": Preset(name="small", model="ViT-B-32", samples_seen=12_800_000, batch_size=4096, lr=5e-4,
                    warmup=500, doc="DataComp small", **_DATACOMP),
    "medium": Preset(name="medium", model="ViT-B-32", samples_seen=128_000_000, batch_size=4096, lr=5e-4,
                     warmup=500, doc="DataComp medium", **_DATACOMP),
    "large": Preset(name="large", model="ViT-B-16", samples_seen=1_280_000_000, batch_size=8192, lr=5e-4,
                    warmup=500, doc="DataComp large", **_DATACOMP),
    "xlarge": Preset(name="xlarge", model="ViT-L-14", samples_seen=12_800_000_000, batch_size=90_112, lr=1e-3,
                     warmup=10_000, beta2=0.95, doc="DataComp xlarge", **_DATACOMP),
}


def get_preset(name: str, **overrides) -> Preset:
    """A preset with some fields replaced (``None`` values are ignored)."""
    if name not in PRESETS:
        raise CurateError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    bad = set(changes) - set(Preset.__dataclass_fields__)
    if bad:
        raise CurateError(f"unknown preset field(s): {', '.join(sorted(bad))}")
    return replace(PRESETS[name], **changes)
