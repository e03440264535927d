"""Options and output shared by the embedding-space commands (dedup, prune, decontaminate)."""

from __future__ import annotations

from typing import Optional

import typer

from curate.names import name_callback

SubsetOpt = typer.Option(None, "--subset", "-s",
                         help="Input: only this subset's samples (a name under subsets/, or a subset file/folder).")
OutputOpt = typer.Option(None, "--output", "-o", help="Name of the kept subset (default: the run name).",
                         callback=name_callback)
ClustersOpt = typer.Option("kmeans", "--clusters", "-c", help="Clustering name (from `curate cluster --name`).",
                           callback=name_callback)


def echo_result(r: dict) -> None:
    c = r["counts"]
    reasons = ", ".join(f"{k}={v}" for k, v in c["reasons"].items() if k != "kept") or "none"
    typer.echo(f"{r['run']}: kept {c['kept']} of {c['input']} (removed: {reasons}) -> subsets/{r['run']}, "
               f"decisions/{r['run']}")
    echo_guards(r.get("guards"))


def echo_guards(guards: dict | None) -> None:
    """The similarity distributions a stage acted on, and its warnings (also in the run manifest)."""
    from curate.embedding_space.guards import summary_lines

    for line in summary_lines(guards):
        typer.echo(line)


def input_uids(ds, subset: Optional[str]):
    from curate.embedding_space.common import subset_uids

    return subset_uids(ds, subset)
