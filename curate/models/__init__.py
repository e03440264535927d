"""open_clip models by name: built-in or curate's small configs, with a pretrained tag or a
local checkpoint, random init when neither is given.

- ``factory``: build models from names and configs (``load_model``, ``register_configs``,
  ``model_id_for``, ``save_checkpoint``); re-exported here.
- ``resolve``: one model-id resolver (a table id, NAME[:TAG], a checkpoint file).
- ``scorers``: DFN scorers by name.
"""

from curate.models.factory import (CONFIG_DIR, PRECISIONS, ModelBundle, ModelError, check_model, file_digest,
                                   list_models, list_pretrained_tags, load_model, model_id_for, register_configs,
                                   resolve_device, resolve_precision, save_checkpoint)

__all__ = [
    "CONFIG_DIR", "PRECISIONS", "ModelBundle", "ModelError", "check_model", "file_digest", "list_models",
    "list_pretrained_tags", "load_model", "model_id_for", "register_configs", "resolve_device",
    "resolve_precision", "save_checkpoint",
]
