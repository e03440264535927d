"""The demo's steps, each the library call its `curate` command makes, at the demo's settings;
each reuses its output when it is already there (an interrupted demo resumes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from curate.demo.config import DemoConfig

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"
DFN_NAME = "dfn"  # the scorer: DATASET/scorers/dfn/ (`curate scorer train`)


def serve_pool(gen_dir: Path, ds):
    """The pool's web server, on the port of the first run when the demo resumes: a sample's uid
    is a hash of its URL, so a new port would make ingest write new uids that the downloads
    (kept from the first run) do not have."""
    from curate.demo.server import StaticServer
    from curate.errors import DatasetError

    served = gen_dir / "_served.json"
    if not served.exists():
        return StaticServer(gen_dir / "www")
    url = json.loads(served.read_text())["url"]
    try:
        return StaticServer(gen_dir / "www", port=int(url.rsplit(":", 1)[1]))
    except OSError as e:
        if ds.has_table("samples"):
            raise DatasetError(f"{ds.root}: its samples were downloaded from {url}, which is taken now ({e.strerror}); "
                               f"free that port or remove {ds.root} to start the demo over") from None
        return StaticServer(gen_dir / "www")


def ingest_pool(cfg: DemoConfig, executor, pool_file: Path, ds) -> dict:
    from curate.ingest.job import IngestConfig, run_ingest

    return run_ingest(executor, IngestConfig(inputs=[str(pool_file)], output=str(ds.root), rows_per_shard=100_000))


def download_pool(executor, ds) -> dict:
    from curate.download.job import DownloadOptions, run_download
    from curate.download.safety import FetchPolicy

    if ds.has_table("downloads") and (ds.root / "_runs" / "download.json").exists():
        return json.loads((ds.root / "_runs" / "download.json").read_text())["counts"]
    # the demo's web is 127.0.0.1: allow exactly that address, nothing else private
    opts = DownloadOptions(policy=FetchPolicy(allow_networks=["127.0.0.1/32"]), thread_count=16,
                           samples_per_shard=2000, timeout=5.0)
    return run_download(ds, executor, opts)


def train_arm(data, out: Path, samples_seen: int, seed: int, cfg: DemoConfig, batch_size: int | None = None) -> dict:
    from curate.train import train

    bs = batch_size or cfg.batch_size
    return train(data, out, preset="tiny", seed=seed, samples_seen=samples_seen, batch_size=bs,
                 warmup=max(1, samples_seen // bs // 8), threads=cfg.threads)


def train_dfn(ds, seed_shards: Path, cfg: DemoConfig) -> dict:
    """`curate scorer train DATASET --seed-set generated/seed --name dfn` at the demo's budget."""
    from curate.train.scorer import train_scorer

    n, bs = cfg.dfn_samples_seen, cfg.dfn_batch_size
    return train_scorer(ds, DFN_NAME, str(seed_shards), preset="tiny", seed=0, samples_seen=n, batch_size=bs,
                        warmup=max(1, n // bs // 8), threads=cfg.threads)


def embed_pool(ds, executor, scorer: str) -> str:
    """`curate embed DATASET --model dfn`: the pool scored by the DFN (clip_score = DFN score)."""
    from curate.embed.job import EmbedOptions, run_embed

    stats = run_embed(ds, executor, EmbedOptions(model=scorer, device="cpu"))
    return stats["model_id"]


def run_demo_recipe(cfg: DemoConfig, ds, model_id: str) -> dict:
    from curate.recipe import load_recipe, run_recipe

    loaded = load_recipe(cfg.recipe or RECIPES_DIR / "demo.yaml")
    loaded.recipe.dataset = str(ds.root)
    loaded.recipe.embedding_model = model_id
    loaded.recipe.output = "curated"
    return run_recipe(loaded, engine=cfg.engine, master=cfg.master)


def write_baseline_subsets(ds, curated_size: int, seed: int) -> dict:
    """raw = every downloaded sample; random = a uniform sample of it as large as curated."""
    from curate.recipe.inputs import initial_uids
    from curate.recipe.stages.sample import sample_uids
    from curate.subset import write_subset

    raw = initial_uids(ds, "downloaded")
    write_subset(ds, "raw", raw, {"stage": "demo", "what": "every downloaded sample"})
    rnd = sample_uids(raw, None, curated_size, seed)
    write_subset(ds, "random", rnd, {"stage": "demo", "what": f"uniform sample of raw, size of curated, seed {seed}"})
    return {"raw": len(raw), "random": len(rnd), "curated": curated_size}


def reshard_arm(ds, subset: str, out: Path, executor) -> str:
    from curate.reshard.job import reshard

    if (out / "meta.json").exists():
        return str(out)
    reshard(ds, subset=subset, output=out, shard_size=2000, overwrite=True, executor=executor)
    return str(out)


def evaluate_arm(checkpoint: str, ev: dict) -> dict:
    from curate.evaluate.tasks import evaluate

    res = evaluate(checkpoint, zeroshot=[ev["zeroshot"]], retrieval_sets=[ev["retrieval"]], templates="default",
                   device="cpu")
    zs = next(iter(res["zeroshot"].values()))
    rt = next(iter(res["retrieval"].values()))
    out = {"zeroshot_top1": zs["top1"], "zeroshot_mean_per_class_recall": zs.get("mean_per_class_recall")}
    for k in ("image_to_text_R@1", "image_to_text_R@5", "text_to_image_R@1", "text_to_image_R@5", "mean_recall"):
        out[f"retrieval_{k}"] = rt.get(k)
    return {k: float(v) for k, v in out.items() if v is not None}


def write_report(ds, comparison: Path, out: Path, executor=None) -> Path:
    from curate.report import build_report

    return build_report(ds, "curated", out=out, comparison=comparison, pool_subset="raw",
                        title="curate demo: procedural pool, DFN-scored recipe, tiny baselines", executor=executor)
