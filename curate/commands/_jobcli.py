"""A job's typer command, generated from its parameters model (``curate.params``).

``job_command(Model, body, ...)`` returns a function whose ``__signature__`` is the DATASET
argument, one ``typer.Option`` per field of ``Model`` (a ``Typer.Argument`` for a field marked
``cli_extra(argument=True)``) and the common options (--name, --subset, --output, --engine,
--master, --conf, --storage-option), declared here once; ``Common`` says which of them a
command has. When the command runs, the options are validated by ``Model`` (a bad value is one
line naming the option, exit 2), the dataset lock is taken, and ``body(run, params)`` does the
job: ``run`` is a ``JobRun`` (dataset, run name, input subset, executor), ``params`` the
validated model.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

import typer
from typer.models import ArgumentInfo
from pydantic import BaseModel

from curate.commands._common import ConfOpt, EngineOpt, MasterOpt, StorageOpt, echo_guards, open_executor
from curate.names import name_callback
from curate.params import (base_type, choices, deprecated_flags, field_flags, is_argument, negative_flag,
                           parse_params, warn)

SubsetOpt = typer.Option(None, "--subset", "-s",
                         help="Input: only this subset's samples (a name under subsets/, or a subset file/folder).")
OutputOpt = typer.Option(None, "--output", "-o", help="Name of the kept subset (default: the run name).",
                         callback=name_callback)
_DEPRECATED = "__deprecated"  # suffix of the parameter that takes a field's old spellings


@dataclass
class JobRun:
    """The common options of a job command, and what a job body needs from them."""

    dataset: Optional[str]           # None: the command has no DATASET argument
    name: Optional[str]
    subset: Optional[str]
    output: Optional[str]
    engine: str
    master: Optional[str]
    conf: list[str]
    app_name: str
    extra_args: list[str] = field(default_factory=list)  # after `--` (Common(extra_args=True))
    _ds: Any = field(default=None, repr=False)

    @property
    def ds(self):
        from curate.tables import Dataset

        if self._ds is None:
            self._ds = Dataset(self.dataset)
        return self._ds

    def input_uids(self):
        """The --subset's uids (None: every sample)."""
        from curate.embedding_space.common import subset_uids

        return subset_uids(self.ds, self.subset)

    def lock(self) -> None:
        from curate.lock import hold_dataset_lock

        hold_dataset_lock(self.dataset)  # one writer per dataset

    def executor(self):
        return open_executor(self.engine, self.master, self.conf, self.app_name, dataset=self.dataset)


@dataclass(frozen=True)
class Common:
    """Which common options a command has, and how they read for it. A command whose own
    model declares --subset or --output (coverage) turns the common ones off."""

    run_name: Optional[str]            # --name's default; None: no --name (unless name_option)
    name_help: str = "Run name (decisions/<name>, subsets/<name>)."
    dataset_help: str = "Dataset folder or URI."
    subset_help: Optional[str] = None  # None: SubsetOpt's
    subset: bool = True                # has --subset (one input subset)
    output: bool = True                # has --output (the kept subset's name)
    lock_first: bool = True            # take the dataset lock before the body (else the body calls run.lock())
    name_option: Optional[bool] = None  # has --name (default: when run_name is given; True: --name defaults to None)
    dataset: bool = True               # has the DATASET argument
    engine: bool = True                # has --engine, --master, --conf
    storage: bool = True               # has --storage-option (every command that may name a store)
    extra_args: bool = False           # takes arguments after `--` (run.extra_args)

    @property
    def has_name(self) -> bool:
        return self.run_name is not None if self.name_option is None else self.name_option


def _typer_angle_labels() -> bool:
    """Whether the installed typer labels types ``<int>`` and required arguments ``{NAME}``
    (0.27 on) rather than ``INTEGER`` and ``NAME``."""
    from importlib.metadata import version

    try:
        return tuple(int(x) for x in version("typer").split(".")[:2]) >= (0, 27)
    except ValueError:  # a version like 0.27.0rc1's last part is not read; an odd one: the new style
        return True


_ANGLE_LABELS = _typer_angle_labels()


def _metavar(f) -> str:
    """A field's type label in help. Values reach the model as text, so typer would call every
    one a string: the label says the field's own type (and a Literal's choices), in the style
    typer gives its own options, so a command's help reads as one table."""
    c = choices(f)
    if _ANGLE_LABELS:
        kind = "|".join(str(x) for x in c) if c else {int: "int", float: "float"}.get(base_type(f), "str")
        return f"<{kind}>"
    if c:
        return "[" + "|".join(str(x) for x in c) + "]"
    return {int: "INTEGER", float: "FLOAT"}.get(base_type(f), "TEXT")


def _option(name: str, f) -> inspect.Parameter:
    """One field as a typer option. Values reach the model as text (bools and lists aside), so
    the model alone converts and checks them, with one message format."""
    required = f.is_required()
    default = ... if required else f.default
    t = base_type(f)
    flags = field_flags(name, f)
    if t is bool:
        neg = negative_flag(f) or f"--no-{name.replace('_', '-')}"
        opt = typer.Option(default, f"{flags[0]}/{neg}", *flags[1:], help=f.description)
        annotation: Any = bool
    elif getattr(t, "__origin__", None) in (list, List):
        opt = typer.Argument(default, help=f.description, metavar=name.upper()) if is_argument(f) else \
            typer.Option([] if f.default is None else default, *flags, help=f.description)  # an argument: every word
        annotation = List[str]
    elif is_argument(f):
        opt = typer.Argument(default, help=f.description, metavar=name.upper(), show_default=False)
        annotation = Optional[str]
    else:
        opt = typer.Option(default, *flags, help=f.description, metavar=_metavar(f),
                           show_default=not required and default is not None)
        annotation = Optional[str]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=annotation)


def _deprecated_option(name: str, f) -> inspect.Parameter | None:
    old = deprecated_flags(f)
    if not old:
        return None
    return inspect.Parameter(name + _DEPRECATED, inspect.Parameter.KEYWORD_ONLY,
                             default=typer.Option(None, *old, hidden=True), annotation=Optional[str])


def _common_params(common: Common) -> list[inspect.Parameter]:
    """The common options a command has (``common``); DATASET first when it has one."""
    kw = inspect.Parameter.KEYWORD_ONLY
    out = []
    if common.dataset:
        out.append(inspect.Parameter("dataset", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str,
                                     default=typer.Argument(..., help=common.dataset_help, metavar="DATASET")))
    if common.has_name:
        out.append(inspect.Parameter("name", kw, annotation=Optional[str], default=typer.Option(
            common.run_name, "--name", help=common.name_help, callback=name_callback)))
    if common.subset:
        out.append(inspect.Parameter("subset", kw, annotation=Optional[str],
                                     default=SubsetOpt if common.subset_help is None else
                                     typer.Option(None, "--subset", "-s", help=common.subset_help)))
    if common.output:
        out.append(inspect.Parameter("output", kw, annotation=Optional[str], default=OutputOpt))
    if common.engine:
        out += [inspect.Parameter("engine", kw, annotation=str, default=EngineOpt),
                inspect.Parameter("master", kw, annotation=Optional[str], default=MasterOpt),
                inspect.Parameter("conf", kw, annotation=List[str], default=ConfOpt)]
    if common.storage:
        out.append(inspect.Parameter("storage_option", kw, annotation=List[str], default=StorageOpt))
    return out


def _signature(model: type[BaseModel], common: Common) -> inspect.Signature:
    """DATASET, the model's arguments, its options, their old spellings, the common options."""
    fields = model.model_fields
    common_params = _common_params(common)
    clash = {p.name for p in common_params} & set(fields)
    if clash:
        raise TypeError(f"{model.__name__}: fields {sorted(clash)} clash with the common options")
    own = [_option(n, f) for n, f in fields.items()]
    params = [] if not common.extra_args else [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    params += common_params[:1] if common.dataset else []
    params += [p for p in own if isinstance(p.default, ArgumentInfo)]
    params += [p for p in own if not isinstance(p.default, ArgumentInfo)]
    params += [p for p in (_deprecated_option(n, f) for n, f in fields.items()) if p is not None]
    params += common_params[1:] if common.dataset else common_params
    # a positional parameter may not follow a keyword-only one: typer reads them all by name
    return inspect.Signature([p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params])


def option_label(model: type[BaseModel]) -> Callable[[str], str]:
    """Field name -> its first CLI spelling (``keep_fraction`` -> ``--keep-fraction``)."""
    return lambda name: field_flags(name, model.model_fields[name])[0] if name in model.model_fields else name


def params_from_cli(model: type[BaseModel], kwargs: dict):
    """The job's validated parameters from a generated command's keyword arguments; an old
    spelling of an option is taken with a one-line deprecation warning on stderr."""
    fields = model.model_fields
    values = {n: kwargs[n] for n in fields}
    spelled: dict[str, str] = {}  # field -> the old spelling the user gave, for error messages
    for n, f in fields.items():
        old = kwargs.get(n + _DEPRECATED)
        if old is not None:
            spelled[n] = "/".join(deprecated_flags(f))
            warn(f"{spelled[n]} is deprecated here, use {field_flags(n, f)[0]} (docs/embedding_space.md)")
            if values[n] is None:
                values[n] = old
    label = option_label(model)
    return parse_params(model, {k: v for k, v in values.items() if v is not None},
                        lambda n: spelled.get(n) or label(n))


def _run_of(common: Common, kwargs: dict, app_name: str) -> JobRun:
    ctx = kwargs.get("ctx")
    return JobRun(dataset=kwargs["dataset"] if common.dataset else None,
                  name=kwargs.get("name") if common.has_name else None,
                  subset=kwargs.get("subset") if common.subset else None,
                  output=kwargs.get("output") if common.output else None,
                  engine=kwargs.get("engine", "auto"), master=kwargs.get("master"), conf=kwargs.get("conf") or [],
                  app_name=app_name, extra_args=list(ctx.args) if ctx is not None else [])


def job_command(model: type[BaseModel], body: Callable[[JobRun, Any], None], *, common: Common, app_name: str,
                help: str, job_model: type[BaseModel] | None = None) -> Callable[..., None]:
    """The typer command function of a job (register it with ``app.command("NAME")(...)``).
    ``model`` is the job's model, or a subclass adding command-line-only options to the job
    model ``job_model`` that the recipe stage shares."""
    signature = _signature(model, common)

    def command(**kwargs) -> None:
        if common.storage:
            from curate.commands._common import use_storage_options

            use_storage_options(kwargs["storage_option"])
        p = params_from_cli(model, kwargs)
        run = _run_of(common, kwargs, app_name)
        if common.lock_first:
            run.lock()
        body(run, p)

    command.__signature__ = signature  # typer reads the options from here
    command.__doc__ = help
    command.__name__ = app_name.replace("-", "_")
    command.params_model = model  # for tests and docs: the model this command was made from
    command.job_model = job_model or model  # ... and the job's model, shared with its recipe stage
    return command


def echo_result(r: dict) -> None:
    c = r["counts"]
    reasons = ", ".join(f"{k}={v}" for k, v in c["reasons"].items() if k != "kept") or "none"
    typer.echo(f"{r['run']}: kept {c['kept']} of {c['input']} (removed: {reasons}) -> "
               f"subsets/{r.get('subset') or r['run']}, decisions/{r['run']}")
    echo_guards(r.get("guards"))
