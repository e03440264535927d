"""Load table schemas from ``schemas/*.yaml`` and check batches against them."""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import yaml

from curate.errors import SchemaError

_PRIMITIVES = {
    "string": pa.string(),
    "large_string": pa.large_string(),
    "binary": pa.binary(),
    "bool": pa.bool_(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint8": pa.uint8(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
    "uint64": pa.uint64(),
    "float16": pa.float16(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "timestamp[us]": pa.timestamp("us"),
    "timestamp[us, UTC]": pa.timestamp("us", tz="UTC"),
}
_FIXED_RE = re.compile(r"^fixed_size_list<(.+)>(?:\[(\d+)\])?$")
_LIST_RE = re.compile(r"^list<(.+)>$")


def schemas_dir() -> Path:
    """Folder of the YAML schemas: $CURATE_SCHEMAS, else ``schemas/`` beside the package."""
    env = os.environ.get("CURATE_SCHEMAS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "schemas"


def parse_type(spec: str, dim: int | None = None) -> pa.DataType:
    """Arrow type from the schema grammar. ``dim`` fills an unsized fixed_size_list."""
    spec = spec.strip()
    if spec in _PRIMITIVES:
        return _PRIMITIVES[spec]
    m = _FIXED_RE.match(spec)
    if m:
        size = int(m.group(2)) if m.group(2) else dim
        if size is None:
            raise SchemaError(f"type {spec!r} needs a list size")
        return pa.list_(parse_type(m.group(1)), size)
    m = _LIST_RE.match(spec)
    if m:
        return pa.list_(parse_type(m.group(1)))
    raise SchemaError(f"unknown column type {spec!r}")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool
    doc: str


@dataclass(frozen=True)
class TableSchema:
    table: str
    version: int
    doc: str
    columns: tuple[Column, ...]
    extra_columns: bool = False

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def arrow(self, dim: int | None = None) -> pa.Schema:
        """The Arrow schema; ``dim`` sizes fixed_size_list columns without a size."""
        fields = [
            pa.field(c.name, parse_type(c.type, dim), nullable=c.nullable, metadata={"doc": c.doc})
            for c in self.columns
        ]
        return pa.schema(
            fields,
            metadata={"curate.table": self.table, "curate.schema_version": str(self.version)},
        )

    def validate(self, data: pa.RecordBatch | pa.Table, where: str = "") -> None:
        """Raise SchemaError naming the column when ``data`` does not match."""
        prefix = f"{where}: " if where else ""
        names = data.schema.names
        for col in self.columns:
            if col.name not in names:
                raise SchemaError(f"{prefix}table {self.table!r} is missing column {col.name!r}")
            actual = data.schema.field(col.name).type
            expected = _expected_type(col.type, actual)
            if actual != expected:
                raise SchemaError(
                    f"{prefix}table {self.table!r} column {col.name!r} has type {actual}, "
                    f"schema v{self.version} says {col.type}"
                )
            if not col.nullable and data.column(col.name).null_count:
                raise SchemaError(
                    f"{prefix}table {self.table!r} column {col.name!r} has "
                    f"{data.column(col.name).null_count} nulls but is not nullable"
                )
        if not self.extra_columns:
            extra = [n for n in names if n not in self.names]
            if extra:
                raise SchemaError(f"{prefix}table {self.table!r} has undeclared columns {extra}")

    def conform(self, data: pa.Table, dim: int | None = None) -> pa.Table:
        """Select and order the declared columns and attach the schema (with docs)."""
        self.validate(data)
        if dim is None:
            dim = _infer_dim(self, data)
        schema = self.arrow(dim)
        cols = [data.column(n) for n in self.names]
        return pa.Table.from_arrays(cols, schema=schema)


def _expected_type(spec: str, actual: pa.DataType) -> pa.DataType:
    m = _FIXED_RE.match(spec.strip())
    if m and not m.group(2):  # unsized fixed list: any length, same value type
        size = actual.list_size if pa.types.is_fixed_size_list(actual) else 1
        return parse_type(spec, size)
    return parse_type(spec)


def _infer_dim(schema: TableSchema, data: pa.Table) -> int | None:
    for c in schema.columns:
        if _FIXED_RE.match(c.type) and not _FIXED_RE.match(c.type).group(2):
            t = data.schema.field(c.name).type
            if pa.types.is_fixed_size_list(t):
                return t.list_size
    return None


@functools.lru_cache(maxsize=None)
def load_schema(name: str) -> TableSchema:
    """The schema of table ``name`` from ``schemas/<name>.yaml``."""
    path = schemas_dir() / f"{name}.yaml"
    if not path.exists():
        raise SchemaError(f"no schema for table {name!r} (looked for {path})")
    spec = yaml.safe_load(path.read_text())
    try:
        cols = tuple(
            Column(c["name"], str(c["type"]), bool(c.get("nullable", True)), c.get("doc", ""))
            for c in spec["columns"]
        )
        ts = TableSchema(
            table=spec["table"],
            version=int(spec["version"]),
            doc=spec.get("doc", ""),
            columns=cols,
            extra_columns=bool(spec.get("extra_columns", False)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise SchemaError(f"{path}: malformed schema file ({e})") from e
    for c in ts.columns:  # fail early on a bad type string
        if not (_FIXED_RE.match(c.type) and not _FIXED_RE.match(c.type).group(2)):
            parse_type(c.type)
    return ts


def schema_names() -> list[str]:
    return sorted(p.stem for p in schemas_dir().glob("*.yaml"))
