"""A field type the commands' models share beyond ``curate.params``: an embeddings model id.
Imports only pydantic, as ``curate.params``."""

from __future__ import annotations

from pydantic import AfterValidator
from typing_extensions import Annotated

from curate.errors import CurateError


def _check_model_id(value: str, info) -> str:
    from curate.names import check_name

    try:
        return check_name(value, info.field_name, reserved=False)
    except CurateError as e:
        raise ValueError(str(e)) from None


# an embeddings model id: a folder under embeddings/ (a safe path component; never reserved)
ModelId = Annotated[str, AfterValidator(_check_model_id)]
