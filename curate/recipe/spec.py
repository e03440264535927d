"""Recipe files: YAML -> typed, validated recipe, with errors that name the file and line.

A recipe names the pool (a dataset folder), the embedding model whose ``embeddings/<model>``
table embedding stages read, where selection starts, and an ordered list of stages::

    name: default
    dataset: ./pool            # relative paths are relative to the recipe file (a file or a URI)
    embedding_model: curate-tiny
    input: downloaded          # all | downloaded | subset:NAME
    output: curated            # subset written at the end (subsets/curated/)
    stages:
      - kind: basic            # the stage family, from the registry (curate stages)
        name: text-basic       # optional; default: the kind (must be unique)
        min_words: 2           # every other key is a parameter of the stage
      - kind: sql
        query: SELECT uid FROM samples WHERE length(text) < 300

The YAML is composed (not just loaded) so every node keeps its line; pydantic errors are
mapped back to the line of the offending key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from curate.errors import CurateError, RecipeError
from curate.names import check_name

RESERVED_STAGE_KEYS = ("kind", "name", "enabled")


class StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    name: str
    enabled: bool = True
    params: dict[str, Any] = Field(default_factory=dict)
    line: int = 0  # 1-based line of the stage in the recipe file


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    dataset: str | None = None  # or `curate run --dataset`
    embedding_model: str | None = None
    input: str = "downloaded"
    output: str | None = None
    stages: list[dict[str, Any]] = Field(default_factory=list)
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        try:  # it names decisions/<name> and subsets/<name> (the output by default), as select's --name does
            check_name(v, "recipe name")
        except CurateError as e:
            raise ValueError(str(e)) from None
        return v

    @field_validator("input")
    @classmethod
    def _check_input(cls, v: str) -> str:
        if v.startswith("subset:") and len(v) > 7:
            try:  # a subset's name, as select --name gives it (no path: subset:../samples)
                check_name(v[len("subset:"):], "input subset", reserved=False)
            except CurateError as e:
                raise ValueError(str(e)) from None
            return v
        if v in ("all", "downloaded"):
            return v
        raise ValueError("input must be 'all', 'downloaded' or 'subset:NAME'")

    @field_validator("output")
    @classmethod
    def _check_output(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                check_name(v, "output")
            except CurateError as e:
                raise ValueError(f"output must be a subset name: {e}") from None
        return v


class LoadedRecipe:
    """A validated recipe plus where it came from (for line numbers and relative paths)."""

    def __init__(self, recipe: Recipe, stages: list[StageSpec], path: Path | str | None, text: str,
                 lines: dict[tuple, int]):
        self.recipe, self.stages, self.path, self.text, self._lines = recipe, stages, path, text, lines

    @property
    def name(self) -> str:
        return self.recipe.name

    @property
    def output(self) -> str:
        return self.recipe.output or self.recipe.name

    @property
    def folder(self) -> str | None:
        """The recipe file's folder, where a stage's relative file is looked for after the dataset
        (a path or URI; None for a recipe given as text)."""
        from curate import storage

        if self.path is None:
            return None
        p = str(self.path)
        return p.rsplit("/", 1)[0] if storage.is_uri(p) else str(Path(p).resolve().parent)

    def dataset_path(self) -> Path | str:
        """The dataset: a URI as written, a path relative to the recipe file resolved."""
        from curate import storage

        if self.recipe.dataset is None:
            raise RecipeError(f"{self.path or '<recipe>'}: no dataset: set 'dataset:' in the recipe or run it "
                              f"with --dataset DATASET")
        if storage.is_uri(self.recipe.dataset):
            return self.recipe.dataset
        if storage.is_uri(self.path):  # a recipe on a store: beside it on that store
            return _beside_uri(str(self.path), self.recipe.dataset, self.where(("dataset",)))
        p = Path(self.recipe.dataset).expanduser()
        if not p.is_absolute() and self.path is not None:
            p = self.path.parent / p
        return p.resolve()

    def where(self, loc: tuple) -> str:
        return _where(self.path, self._lines, loc)


def _beside_uri(recipe_uri: str, relative: str, where: str) -> str:
    """``relative`` (a path in a recipe) resolved against the folder of ``recipe_uri``."""
    import posixpath
    from urllib.parse import urlsplit

    parts = urlsplit(recipe_uri)
    key = posixpath.normpath(posixpath.join(posixpath.dirname(parts.path.lstrip("/")), relative))
    if relative.startswith(("/", "~")) or key == ".." or key.startswith("../"):
        raise RecipeError(f"{where}: dataset {relative!r} is not a folder beside the recipe on "
                          f"{parts.scheme}://{parts.netloc}/ (write the dataset's URI)")
    return f"{parts.scheme}://{parts.netloc}" + ("" if key == "." else f"/{key}")


def _where(path: Path | str | None, lines: dict[tuple, int], loc: tuple) -> str:
    """'file:line' of the deepest known node on ``loc``."""
    loc = tuple(loc)
    while loc and loc not in lines:
        loc = loc[:-1]
    line = lines.get(loc, 1)
    return f"{path or '<recipe>'}:{line}"


def _duplicate_key(node: yaml.Node) -> tuple[str, int, int] | None:
    """The first key a mapping of the tree repeats: (key, its line, the first one's line)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode):
                if k.value in seen:
                    return k.value, k.start_mark.line + 1, seen[k.value]
                seen[k.value] = k.start_mark.line + 1
            if (dup := _duplicate_key(v)) is not None:
                return dup
    elif isinstance(node, yaml.SequenceNode):
        for v in node.value:
            if (dup := _duplicate_key(v)) is not None:
                return dup
    return None


def _node_lines(node: yaml.Node, prefix: tuple = ()) -> dict[tuple, int]:
    """Path (keys and list indexes) -> 1-based line, for every node of a composed YAML tree."""
    out = {prefix: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k.value)
            out[prefix + (key,)] = k.start_mark.line + 1
            for p, ln in _node_lines(v, prefix + (key,)).items():
                if p != prefix + (key,):
                    out[p] = ln
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out.update(_node_lines(v, prefix + (i,)))
    return out


def _format_validation(err: ValidationError, path: Path | None, lines: dict[tuple, int], prefix: tuple = ()) -> str:
    parts = []
    for e in err.errors():
        loc = prefix + tuple(e["loc"])
        field = ".".join(str(x) for x in loc) or "recipe"
        parts.append(f"{_where(path, lines, loc)}: {field}: {e['msg']}")
    return "; ".join(parts)


def load_recipe(source: str | Path, text: str | None = None) -> LoadedRecipe:
    """Parse and validate a recipe file, local or a URI (or ``text`` with ``source`` as its name)."""
    from curate import storage

    path = (str(source) if storage.is_uri(source) else Path(source)) if source else None
    if text is None:
        text = _read_recipe(path)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise RecipeError(f"{path or '<recipe>'}:{line}: invalid YAML: {e.problem or e}") from e
    if node is None or not isinstance(data, dict):
        raise RecipeError(f"{path or '<recipe>'}:1: a recipe is a YAML mapping (name, dataset, stages)")
    if (dup := _duplicate_key(node)) is not None:  # YAML keeps the last in silence: a stages list lost
        key, line, first = dup
        raise RecipeError(f"{path or '<recipe>'}:{line}: key {key!r} is given twice (first at line {first}); "
                          "keep one")
    lines = _node_lines(node)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(_format_validation(e, path, lines)) from e
    stages = _stage_specs(recipe, path, lines)
    return LoadedRecipe(recipe, stages, path, text, lines)


def _read_recipe(path: Path | str) -> str:
    from curate import storage

    try:
        data = storage.read_bytes(path)  # a file or an object
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file") from None
    except (OSError, storage.StorageError) as e:
        raise RecipeError(f"{path}: cannot read recipe ({getattr(e, 'strerror', None) or e})") from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecipeError(f"{path}: a recipe is UTF-8 text (byte {e.start} is not)") from None


def _stage_specs(recipe: Recipe, path: Path | str | None, lines: dict[tuple, int]) -> list[StageSpec]:
    from curate.recipe.registry import get_kind, kinds

    out: list[StageSpec] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(recipe.stages):
        loc = ("stages", i)
        where = _where(path, lines, loc)
        if not isinstance(raw, dict) or "kind" not in raw:
            raise RecipeError(f"{where}: stage {i + 1} needs a 'kind' (one of: {', '.join(kinds())})")
        kind = str(raw["kind"])
        try:
            stage_kind = get_kind(kind)
        except KeyError:
            raise RecipeError(f"{_where(path, lines, loc + ('kind',))}: unknown stage kind {kind!r} "
                              f"(known: {', '.join(kinds())})") from None
        name = str(raw.get("name") or kind)
        try:  # the stage name becomes part of table paths (decisions/recipe-<recipe>-<stage>)
            check_name(name, "stage name", reserved=False)
            check_name(f"recipe-{recipe.name}-{name}", f"stage {name!r}'s table name (recipe-<recipe>-<stage>)",
                       reserved=False)
        except CurateError as e:
            raise RecipeError(f"{_where(path, lines, loc + ('name',))}: {e}") from None
        if name in seen:
            raise RecipeError(f"{_where(path, lines, loc + ('name',))}: stage name {name!r} is used twice "
                              f"(first at line {seen[name]}); give one a distinct 'name'")
        seen[name] = lines.get(loc, 0)
        params = {k: v for k, v in raw.items() if k not in RESERVED_STAGE_KEYS}
        _warn_old_keys(stage_kind.params, params, name, lambda key: _where(path, lines, loc + (key,)))
        try:
            model = stage_kind.params.model_validate(params)
        except ValidationError as e:
            raise RecipeError(_format_validation(e, path, lines, prefix=loc)) from e
        enabled = raw.get("enabled", True)
        if not isinstance(enabled, bool):
            raise RecipeError(f"{_where(path, lines, loc + ('enabled',))}: enabled must be true or false")
        out.append(StageSpec(kind=kind, name=name, enabled=enabled,
                             params=model.model_dump(mode="json"), line=lines.get(loc, 0)))
    return out


def _warn_old_keys(model, params: dict, stage: str, where) -> None:
    """A key kept only as an alias of a renamed parameter loads, with one warning line each."""
    from curate.params import old_keys, warn

    for old, new in old_keys(model).items():
        if old in params:
            warn(f"{where(old)}: stage {stage!r}: key {old!r} is deprecated, use {new!r}")
