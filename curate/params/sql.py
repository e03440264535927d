"""Parameters of ``curate sql`` (a query over a dataset's tables) and of the ``sql`` recipe
stage (keep or remove the uids a query returns). They are two jobs: the command prints or
writes any query's rows, the stage turns a uid query into decisions."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from curate.params import JobParams, cli_extra

# curate.sql's defaults (curate.sql.connection / curate.sql.spill import DuckDB, so they are
# repeated here; tests/recipe/test_job_params.py checks they agree)
DEFAULT_MEMORY_LIMIT = "50%"
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MAX_SPILL = "20GB"
MAX_SPILL_ENV = "CURATE_SQL_MAX_SPILL"


class DuckDBMemory(JobParams):
    """The DuckDB memory limit of a command that runs one query in this process."""

    memory_limit: str = Field(DEFAULT_MEMORY_LIMIT, description="DuckDB memory limit (4GB, 512MB or a share of RAM "
                              "like 50%); larger sorts and joins spill to a temporary folder.")


class SQLQueryParams(DuckDBMemory):
    """``curate sql DATASET QUERY``."""

    query: str = Field(description="SELECT statement; every table is a view (samples, rejects, decisions_<run>, "
                       "embeddings_<model>, subsets_<name>, ...).", json_schema_extra=cli_extra(argument=True))
    out: Optional[str] = Field(None, description="Write the result to a .csv or .parquet file instead of printing.")
    limit: int = Field(50, ge=0, description="Rows to print.")
    max_spill: Optional[str] = Field(None, description=f"Most the spill folder may hold (DuckDB's "
                                     f"max_temp_directory_size; default ${MAX_SPILL_ENV} or {DEFAULT_MAX_SPILL}).")
    timeout: float = Field(DEFAULT_TIMEOUT_S, ge=0, description="Seconds before the query is interrupted (0: no limit).")

    def limits(self) -> dict:
        """``curate.sql.query_batches``'s resource limits."""
        return dict(memory_limit=self.memory_limit, timeout=self.timeout, max_spill_size=self.max_spill)


class SQLParams(JobParams):
    """The ``sql`` recipe stage."""

    query: str = Field(min_length=1, description="SELECT returning a uid column (and optionally value)")
    mode: Literal["keep", "remove"] = Field("keep", description="keep the uids the query returns, or remove them")
    reason: str = Field("sql_excluded", pattern=r"^[a-z0-9_]+$", description="removal reason recorded")
