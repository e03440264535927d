"""Field helpers of the commands that are not selection jobs (``curate/commands/_modelcli.py``):
positional arguments and embeddings model ids. Imports only pydantic, as ``curate.params``."""

from __future__ import annotations

from pydantic import AfterValidator
from typing_extensions import Annotated

from curate.errors import CurateError


def cli_argument() -> dict:
    """``json_schema_extra`` of a field that is a positional argument (DATASET, INPUTS...)."""
    return {"argument": True}


def is_argument(field) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("argument"))


def _check_model_id(value: str, info) -> str:
    from curate.names import check_name

    try:
        return check_name(value, info.field_name, reserved=False)
    except CurateError as e:
        raise ValueError(str(e)) from None


# an embeddings model id: a folder under embeddings/ (a safe path component; never reserved)
ModelId = Annotated[str, AfterValidator(_check_model_id)]
