"""Reference trainer: open_clip_train with DataComp's scale presets (and a CPU-sized ``tiny``).

``train(shards, output, preset="tiny", seed=0)`` -> ``train.json`` content; see docs/train.md.
"""

from curate.train.launch import Launch, LaunchError
from curate.train.presets import PRESETS, Preset, get_preset
from curate.train.runner import TrainError, build_args, plan_steps, resolve_train_data
from curate.train.output_uri import train  # output may be a URI: trained locally, then uploaded

__all__ = ["Launch", "LaunchError", "PRESETS", "Preset", "TrainError", "build_args", "get_preset", "plan_steps", "resolve_train_data", "train"]
