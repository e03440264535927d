"""A command that is not a selection job, generated from its parameters model.

The variant of ``_jobcli.job_command`` for ingest, download, embed, reshard, select, train,
eval and run: no DATASET/--name/--subset/--output of a selection job; instead the model's own
positional arguments (fields marked ``cli_argument()``), one option per other field (as
``job_command`` makes them), and a few shared options picked by ``Shared`` (--master, --conf,
--engine; --storage-option; the arguments after ``--``). When the command runs, the values are
validated by the model (a bad one is one line naming the option, exit 2), --storage-option is
applied, and ``body(params, run)`` does the work with the validated model and a ``CommandRun``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

import typer
from pydantic import BaseModel

from curate.commands._common import ConfOpt, EngineOpt, MasterOpt, StorageOpt, open_executor, use_storage_options
from curate.commands._jobcli import _deprecated_option, _option, params_from_cli
from curate.params import base_type, field_flags, negative_flag
from curate.params.common import is_argument


@dataclass(frozen=True)
class Shared:
    """Which shared options a generated command has (declared once, in ``_common``)."""

    engine: bool = False      # --master, --conf, --engine
    storage: bool = True      # --storage-option
    extra_args: bool = False  # arguments after ``--`` reach the body (register with allow_extra_args)


@dataclass
class CommandRun:
    """The shared options' values, and what a body needs from them."""

    app_name: str
    engine: str = "auto"
    master: Optional[str] = None
    conf: list[str] = field(default_factory=list)
    storage_option: list[str] = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)

    def executor(self, dataset: Optional[str] = None, rows: Optional[int] = None):
        return open_executor(self.engine, self.master, self.conf, self.app_name, dataset=dataset, rows=rows)


def _argument(name: str, f) -> inspect.Parameter:
    """A positional field (``cli_argument()``): a list takes every remaining word."""
    required = f.is_required()
    many = getattr(base_type(f), "__origin__", None) in (list, List)
    arg = typer.Argument(... if required else f.default, help=f.description)
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=arg,
                             annotation=List[str] if many else Optional[str])


def _model_option(name: str, f) -> inspect.Parameter:
    """One field as an option, as ``job_command`` makes it, except a bool: it gets an off switch
    only where the field names one (``--overwrite`` stays a plain flag), and a bool defaulting to
    None stays None unless given (``--faithful/--no-faithful``: the default depends on others)."""
    if base_type(f) is not bool:
        return _option(name, f)
    flags = field_flags(name, f)
    neg = negative_flag(f)
    opt = typer.Option(f.default, *([f"{flags[0]}/{neg}"] if neg else flags[:1]), *flags[1:], help=f.description)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt,
                             annotation=Optional[bool] if f.default is None else bool)


def _shared_params(shared: Shared) -> list[inspect.Parameter]:
    kw = inspect.Parameter.KEYWORD_ONLY
    out = []
    if shared.engine:
        out += [inspect.Parameter("master", kw, annotation=Optional[str], default=MasterOpt),
                inspect.Parameter("conf", kw, annotation=List[str], default=ConfOpt),
                inspect.Parameter("engine", kw, annotation=str, default=EngineOpt)]
    if shared.storage:
        out.append(inspect.Parameter("storage_option", kw, annotation=List[str], default=StorageOpt))
    return out


def model_command(model: type[BaseModel], body: Callable[[Any, CommandRun], None], *, app_name: str,
                  help: str, shared: Shared = Shared()) -> Callable[..., None]:
    """The typer command function made from ``model`` (register it with ``app.command("NAME")``)."""
    fields = model.model_fields
    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)] \
        if shared.extra_args else []
    params += [_argument(n, f) for n, f in fields.items() if is_argument(f)]
    params += [_model_option(n, f) for n, f in fields.items() if not is_argument(f)]
    params += [p for p in (_deprecated_option(n, f) for n, f in fields.items()) if p is not None]
    shared_params = _shared_params(shared)
    clash = {p.name for p in shared_params} & set(fields)
    if clash:
        raise TypeError(f"{model.__name__}: fields {sorted(clash)} clash with the shared options")
    params += shared_params

    def command(**kwargs) -> None:
        p = params_from_cli(model, kwargs)
        ctx = kwargs.get("ctx")
        run = CommandRun(app_name, engine=kwargs.get("engine", "auto"), master=kwargs.get("master"),
                         conf=list(kwargs.get("conf") or []), storage_option=list(kwargs.get("storage_option") or []),
                         extra_args=list(ctx.args) if ctx is not None else [])
        if shared.storage:
            use_storage_options(run.storage_option)  # every later path (and subprocess) gets the settings
        body(p, run)

    command.__signature__ = inspect.Signature(params)  # typer reads the arguments and options from here
    command.__doc__ = help
    command.__name__ = app_name.replace("-", "_")
    command.command_model = model  # for tests and docs: the model this command was made from
    return command
