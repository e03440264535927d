"""``curate decontaminate``: drop pool samples that are near copies of evaluation images."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from curate.commands._common import ConfOpt, EngineOpt, MasterOpt, open_executor
from curate.embedding_space.cli import OutputOpt, SubsetOpt, echo_result, input_uids
from curate.lock import hold_dataset_lock
from curate.models.resolve import model_spec_callback
from curate.names import name_callback


def register(app: typer.Typer) -> None:
    @app.command("decontaminate")
    def decontaminate_cmd(
        dataset: Path = typer.Argument(..., help="Dataset folder."),
        eval_source: str = typer.Option(..., "--eval", help="Evaluation images: an image folder (embedded with the "
                                        "pool's model), a Parquet file/folder with image_embedding, or a table name."),
        threshold: float = typer.Option(0.9, "--threshold", help="Remove pool samples with cosine >= this to any eval image."),
        model: Optional[str] = typer.Option(None, "--embeddings", "--model", "-m",
                                            help="Pool embeddings: table id, open_clip NAME[:TAG] or checkpoint "
                                            "(default: the only table).", callback=model_spec_callback),
        eval_model: Optional[str] = typer.Option(None, "--eval-model",
                                                 help="open_clip model name for an image folder (default: from --model)."),
        eval_pretrained: Optional[str] = typer.Option(None, "--eval-pretrained",
                                                      help="Pretrained tag or checkpoint file for --eval-model."),
        name: str = typer.Option("decontaminate", "--name", help="Run name (decisions/, subsets/, decontamination/<name>).",
                           callback=name_callback),
        subset: Optional[str] = SubsetOpt,
        output: Optional[str] = OutputOpt,
        engine: str = EngineOpt,
        master: Optional[str] = MasterOpt,
        conf: list[str] = ConfOpt,
    ) -> None:
        """Remove pool samples within a cosine threshold of any evaluation image; report eval images with copies."""
        from curate.embedding_space.jobs import check_dataset, check_decontaminate, run_decontaminate
        from curate.models.resolve import resolve_embeddings
        from curate.tables import Dataset

        ds = Dataset(dataset)
        hold_dataset_lock(dataset)  # one writer per dataset
        ds = check_dataset(Dataset(dataset))
        model = resolve_embeddings(ds, model)
        check_decontaminate(ds, model, eval_source, threshold, eval_model, eval_pretrained)
        uids = input_uids(ds, subset)
        ex = open_executor(engine, master, conf, "curate-decontaminate", dataset=dataset)
        r = run_decontaminate(ds, model, eval_source, threshold, run=name,
                              model_name=eval_model, pretrained=eval_pretrained,
                              input_uids=uids, executor=ex, output=output)
        echo_result(r)
        typer.echo(f"{r['counts']['eval_images_with_copies']} of {r['counts']['eval_images']} evaluation images had "
                   f"near copies in the pool -> decontamination/{name}")
