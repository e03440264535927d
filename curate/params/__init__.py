"""Each job's parameters, declared once: a pydantic model per job.

A job model holds every parameter of a job (name, type, default, validation, help text in
``description``). From that one model the CLI command is generated
(``curate/commands/_jobcli.py``: one ``--kebab-case`` option per field, choices from
``Literal``, help from ``description``) and the recipe stage takes its parameters
(``curate/recipe/stages/``: the stage's params model is the job model, or a subclass adding
only recipe-side keys), so ``--help``, ``curate stages`` and recipes cannot drift. Adding a
parameter is one field here (docs/ARCHITECTURE.md, "Add a job in one place").

CLI-only spellings go in the field's ``json_schema_extra``:

- ``flags``: extra spellings (``["-k"]``, ``["-c"]``);
- ``negative``: the off switch of a bool (``"--euclidean"`` gives ``--spherical/--euclidean``);
- ``deprecated_flags``: old spellings still accepted, with a one-line warning on stderr;
- ``argument``: a positional argument rather than an option (``curate sql DATASET QUERY``).

An old recipe key is kept with ``validation_alias=AliasChoices(new, old)``; a recipe using it
loads with a one-line warning naming the stage, the old key and the new one.

This package imports only pydantic: the CLI reads it while parsing, before any heavy import.
"""

from __future__ import annotations

import typing
from typing import Any, ClassVar, Literal, Optional, get_args, get_origin

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, ValidationError
from typing_extensions import Annotated

from curate.errors import CurateError

__all__ = ["JobParams", "JobParamsError", "Name", "ModelSpec", "Field", "AliasChoices", "Literal", "Optional",
           "cli_extra", "field_flags", "negative_flag", "deprecated_flags", "is_argument", "old_keys", "warn", "base_type", "choices",
           "describe_error", "describe_validation", "parse_params"]


class JobParamsError(CurateError):
    """A job parameter has a bad value (the message names the option or recipe key)."""


class JobParams(BaseModel):
    """Base of every job's (and recipe stage's) parameters: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # the job function's name for a field where it differs (neighbors -> n_neighbors)
    job_arg_names: ClassVar[dict[str, str]] = {}
    # fields the caller turns into something else first (embeddings -> a table id), or that
    # are not the job function's (a recipe stage's table name)
    job_arg_exclude: ClassVar[frozenset[str]] = frozenset()

    def job_kwargs(self) -> dict[str, Any]:
        """The job function's keyword arguments: every field, renamed by ``job_arg_names``,
        less ``job_arg_exclude``. The command and the recipe stage both call the job with
        these, so a new field whose name is the job function's argument needs no other edit."""
        return {self.job_arg_names.get(k, k): getattr(self, k) for k in type(self).model_fields
                if k not in self.job_arg_exclude}


def cli_extra(*flags: str, negative: str | None = None, deprecated: tuple[str, ...] = (),
              argument: bool = False) -> dict:
    """``json_schema_extra`` for a field's CLI spellings (see the module docstring)."""
    out: dict[str, Any] = {"argument": True} if argument else {}
    if flags:
        out["flags"] = list(flags)
    if negative:
        out["negative"] = negative
    if deprecated:
        out["deprecated_flags"] = list(deprecated)
    return out


def _extra(field) -> dict:
    extra = field.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def field_flags(name: str, field) -> list[str]:
    """A field's CLI spellings: ``--kebab-case`` of its name first, then its extra ``flags``."""
    # a field's own spelling given again among its extra flags is listed once
    return list(dict.fromkeys([f"--{name.replace('_', '-')}", *_extra(field).get("flags", [])]))


def negative_flag(field) -> str | None:
    return _extra(field).get("negative")


def deprecated_flags(field) -> list[str]:
    return list(_extra(field).get("deprecated_flags", []))


def is_argument(field) -> bool:
    return bool(_extra(field).get("argument"))


def old_keys(model: type[BaseModel]) -> dict[str, str]:
    """Old recipe key -> its field, from each field's ``validation_alias=AliasChoices(new, old)``."""
    out: dict[str, str] = {}
    for name, f in model.model_fields.items():
        alias = f.validation_alias
        if isinstance(alias, AliasChoices):
            out.update({a: name for a in alias.choices if isinstance(a, str) and a not in model.model_fields})
    return out


def warn(message: str) -> None:
    """One warning line on stderr (a deprecated option or recipe key), as ``curate: warning: ...``."""
    import sys

    sys.stderr.write(f"curate: warning: {message}\n")


def _inner(annotation):
    """``Optional[X]`` / ``Annotated[X, ...]`` -> X."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def base_type(field) -> Any:
    """The field's value type without Optional/Annotated (``Literal[...]`` stays as is)."""
    return _inner(field.annotation)


def choices(field) -> tuple | None:
    """The allowed values of a ``Literal`` field, else None."""
    t = base_type(field)
    return get_args(t) if get_origin(t) is Literal else None


# ---------------------------------------------------------------- shared field types
def _check_name(value: str, info) -> str:
    from curate.names import check_name

    try:
        return check_name(value, info.field_name)
    except CurateError as e:
        raise ValueError(str(e)) from None


def _check_model_spec(value: str, info) -> str:
    """An embeddings table id, open_clip NAME[:TAG] or checkpoint file, checked as
    ``--embeddings`` is on the command line (never a path built from the raw value)."""
    from types import SimpleNamespace

    from curate.models.resolve import model_spec_callback

    try:
        return model_spec_callback(None, SimpleNamespace(opts=[info.field_name]), value)
    except CurateError as e:
        raise ValueError(str(e)) from None


# a name that becomes a folder (clusters/<name>): a safe single path component
Name = Annotated[str, AfterValidator(_check_name)]
# what --embeddings takes (curate.models.resolve): an embeddings table id or a model spec
ModelSpec = Annotated[str, AfterValidator(_check_model_spec)]


# ---------------------------------------------------------------- errors as one line
def _bounds(field) -> tuple[Any, Any, Any, Any]:
    ge = gt = le = lt = None
    for m in field.metadata:
        ge = getattr(m, "ge", ge)
        gt = getattr(m, "gt", gt)
        le = getattr(m, "le", le)
        lt = getattr(m, "lt", lt)
    return ge, gt, le, lt


def _range(field) -> str:
    ge, gt, le, lt = _bounds(field)
    lo = f"[{ge}" if ge is not None else (f"({gt}" if gt is not None else None)
    hi = f"{le}]" if le is not None else (f"{lt})" if lt is not None else None)
    if lo and hi:
        return f"must be in {lo}, {hi}"
    if lo:
        return f"must be {'>=' if ge is not None else '>'} {lo[1:]}"
    return f"must be {'<=' if le is not None else '<'} {hi[:-1]}"


_TYPE_WORDS = {"int_parsing": "an integer", "int_from_float": "an integer", "float_parsing": "a number",
               "bool_parsing": "true or false", "string_type": "text"}


def describe_error(model: type[BaseModel], error: dict, label) -> str:
    """One pydantic error as ``<label> must be ..., got X``; ``label(field_name)`` names the
    field as the user spelled it (``--eps`` on the command line, ``eps`` in a recipe)."""
    loc = error.get("loc") or ()
    name = str(loc[0]) if loc else ""
    field = model.model_fields.get(name)
    what = label(name) if name else ""
    kind = error.get("type", "")
    if not name:  # a check across fields (a model validator): its message says it all
        return str(error.get("msg", "")).removeprefix("Value error, ")
    got = error.get("input")
    if kind == "missing":
        return f"{what} is required"
    if kind == "extra_forbidden":
        return f"{what} is not a parameter (known: {', '.join(model.model_fields)})"
    if field is not None and kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        msg = _range(field)
    elif field is not None and kind == "literal_error":
        msg = "must be one of " + ", ".join(str(c) for c in choices(field) or ())
    elif kind in _TYPE_WORDS:
        msg = f"must be {_TYPE_WORDS[kind]}"
    elif kind == "value_error":  # a validator's message names the field by its name: say it as the user did
        msg = str(error.get("msg", "")).removeprefix("Value error, ")
        return what + msg[len(name):] if name and msg.startswith(name + " ") else f"{what}: {msg}"
    else:
        msg = str(error.get("msg", "is invalid"))
    return f"{what} {msg}, got {got!r}"


def describe_validation(model: type[BaseModel], err: ValidationError, label=lambda name: name) -> str:
    return "; ".join(describe_error(model, e, label) for e in err.errors())


def parse_params(model: type[BaseModel], values: dict, label=lambda name: name):
    """``model`` validated from ``values``; a bad value is one ``JobParamsError`` line."""
    try:
        return model.model_validate(values)
    except ValidationError as e:
        raise JobParamsError(describe_validation(model, e, label)) from None
