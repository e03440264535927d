"""Errors a user can act on. The CLI prints their message without a traceback."""


class CurateError(Exception):
    """Base class for errors that carry a complete, user-facing message."""


class InputFileError(CurateError):
    """An input file is unreadable as a whole (corrupt, wrong schema, missing column)."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}")


class SchemaError(CurateError):
    """A batch or table does not match its schema in schemas/."""


class DatasetError(CurateError):
    """A dataset folder is missing, incomplete or inconsistent."""


class RecipeError(CurateError):
    """A recipe is malformed; the message names the file and line."""


class EngineStartError(CurateError):
    """The execution engine (a Spark session) could not start: a bad master URL or setting, a
    master that does not answer; the message carries the engine's own reason."""
