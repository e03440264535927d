"""A user error raised inside a Spark worker reaches the user as the same one line (exit 2) as
on the driver, for every CurateError subclass in curate, not only a few known names."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import curate
from curate.cli import _user_message, cli_errors
from curate.errors import CurateError


def all_curate_error_classes() -> list[type]:
    for mod in pkgutil.walk_packages(curate.__path__, "curate."):
        try:
            importlib.import_module(mod.name)
        except Exception:  # an optional dependency missing here: its classes cannot be raised either
            continue
    seen, todo = [], [CurateError]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo.extend(cls.__subclasses__())
    return sorted({c for c in seen if c.__module__.startswith("curate.")}, key=lambda c: f"{c.__module__}.{c.__qualname__}")


CLASSES = all_curate_error_classes()


def make(cls: type, message: str) -> CurateError:
    exc = cls.__new__(cls)  # whatever its __init__ wants, the message is what the user must see
    Exception.__init__(exc, message)
    return exc


def raise_in_task(cls: type, message: str):
    # Refers to nothing in this module, so the worker does not import it (and all of curate).
    def task_fn(task: dict) -> dict:
        exc = cls.__new__(cls)
        Exception.__init__(exc, message)
        raise exc

    return task_fn


def test_the_registry_is_real():
    names = {c.__name__ for c in CLASSES}
    # more than the four names the CLI used to match in traceback text
    assert {"InputFileError", "SchemaError", "DatasetError", "CurateError", "RecipeError", "SQLError",
            "InvalidNameError", "DatasetLockedError"} <= names
    assert len(CLASSES) >= 15


@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
def test_every_curate_error_raised_in_a_spark_worker_prints_one_line(spark, capsys, cls):
    from curate.engine.spark import SparkExecutor

    message = f"{cls.__name__}: shard 3 row 7 is bad [/b] (see docs)"
    with pytest.raises(SystemExit) as info:
        with cli_errors():
            SparkExecutor(spark).map_tasks([{"i": 0}], raise_in_task(cls, message))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"curate: error: {message}"]


def test_a_bug_in_a_worker_keeps_its_traceback(spark, capsys):
    from curate.engine.spark import SparkExecutor

    def buggy(task: dict) -> dict:
        return {"x": [][1]}

    with pytest.raises(Exception) as info:
        with cli_errors():
            SparkExecutor(spark).map_tasks([{"i": 0}], buggy)
    assert "IndexError" in str(info.value)  # not turned into a user error line
    assert "curate: error" not in capsys.readouterr().err


def test_text_naming_a_non_curate_class_is_not_a_user_error():
    assert _user_message(RuntimeError("Traceback ...\nos.path.FooError: nope")) is None
    assert _user_message(RuntimeError("curate.nosuchmodule.InputFileError: nope")) is None
    assert _user_message(RuntimeError("curate.tables.dataset.Dataset: not an exception")) is None
    assert _user_message(RuntimeError("x\ncurate.errors.SchemaError: col a\nmore")) == "col a"


def test_a_curate_error_from_a_dataframe_worker_prints_one_line(spark, capsys):
    """The Spark SQL path (mapInArrow, applyInArrow) wraps worker errors differently from RDDs."""
    import pyarrow as pa

    from curate.engine.spark import tasks_to_frame
    from curate.recipe.spec import RecipeError

    def batches(task: dict):
        raise RecipeError("recipe.yaml:3: stage 'x' is bad")
        yield  # a generator, as task batch functions are

    schema = pa.schema([("uid", pa.string())])
    with pytest.raises(SystemExit) as info:
        with cli_errors():
            tasks_to_frame(spark, [{"i": 0}], batches, schema).collect()
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines() == ["curate: error: recipe.yaml:3: stage 'x' is bad"]
