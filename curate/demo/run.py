"""The demo, end to end, on one machine: does curation beat the raw pool at equal compute?

1. generate a procedural pool with labelled noise, a clean seed set and a separate eval set;
2. serve the pool on 127.0.0.1 and ``ingest`` + ``download`` it (img2dataset);
3. ``scorer train``: a data-filtering network (DFN) on the clean seed set, ``DATASET/scorers/dfn``;
4. ``embed --model dfn``: the pool embedded by it (CLIP score = DFN score);
5. run the default recipe (``recipes/demo.yaml``) into ``subsets/curated``;
6. make ``subsets/raw`` (every downloaded sample) and ``subsets/random`` (a random sample of
   the pool, as large as the curated subset); ``reshard`` all three;
7. train a tiny CLIP on each, same samples seen, for each seed; ``eval`` on the eval set;
8. write ``comparison.json`` and the HTML report.

Every step reuses its output when it is already there, so an interrupted demo resumes.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curate.progress import info

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"
ARMS = ("raw", "random", "curated")
DFN_NAME = "dfn"  # the scorer: DATASET/scorers/dfn/ (`curate scorer train`)


@dataclass
class DemoConfig:
    workdir: Path
    pool_size: int = 3000
    pool_seed: int = 0
    seed_set: int = 2000          # clean pairs the DFN is trained on
    dfn_samples_seen: int = 8192  # at the tiny preset's batch (128): fewer leaves the scorer collapsed
    dfn_batch_size: int = 128
    samples_seen: int = 4096      # per baseline model: the same for every arm
    batch_size: int = 64          # baselines' batch
    seeds: tuple[int, ...] = (0, 1, 2)
    eval_per_class: int = 8
    retrieval_n: int = 300
    recipe: Path | None = None    # default: recipes/demo.yaml
    engine: str = "spark"
    master: str | None = "local[2]"
    threads: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["workdir"] = str(self.workdir)
        d["recipe"] = str(self.recipe) if self.recipe else None
        d["seeds"] = list(self.seeds)
        return d


SCALES: dict[str, dict[str, Any]] = {
    # the demo `make demo` runs: about 15 minutes on 2 CPU cores
    "default": {},
    # a smoke run of every step (tests): a minute or two
    "tiny": dict(pool_size=240, seed_set=256, dfn_samples_seen=256, dfn_batch_size=32, samples_seen=128,
                 batch_size=32, eval_per_class=1, retrieval_n=24),
}


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (Spark's Python workers are not
    counted until they exit; the JVM never is): a lower bound, for machines shared with others."""
    import resource

    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


class _Steps:
    """Times each step (wall and CPU); the timings go into demo.json and the summary."""

    def __init__(self):
        self.timings: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def run(self, name: str, fn, *args, **kwargs):
        t, c = time.perf_counter(), _cpu_seconds()
        info(f"demo: {name} ...")
        out = fn(*args, **kwargs)
        self.cpu[name] = round(_cpu_seconds() - c, 2)
        self.timings[name] = round(time.perf_counter() - t, 2)
        info(f"demo: {name} done in {self.timings[name]:.1f}s")
        return out


def _executor(cfg: DemoConfig):
    from curate.engine.factory import open_executor

    return open_executor(cfg.engine, cfg.master, [], app_name="curate-demo")


def run_demo(cfg: DemoConfig) -> dict:
    from curate.demo import pool as gen
    from curate.tables import Dataset

    wd = Path(cfg.workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    steps = _Steps()
    t0 = time.perf_counter()
    gen_dir, ds = wd / "generated", Dataset(wd / "dataset")

    def generate():
        marker = gen_dir / "_generated.json"
        want = {"pool_size": cfg.pool_size, "pool_seed": cfg.pool_seed, "seed_set": cfg.seed_set,
                "eval_per_class": cfg.eval_per_class, "retrieval_n": cfg.retrieval_n}
        if marker.exists() and json.loads(marker.read_text()).get("params") == want:
            return json.loads(marker.read_text())
        if gen_dir.exists():
            shutil.rmtree(gen_dir)
        out = {"pool": gen.generate_pool(gen_dir, gen.PoolSpec(n=cfg.pool_size, seed=cfg.pool_seed)),
               "seed_shards": gen.generate_clean_shards(gen_dir / "seed", cfg.seed_set, seed=cfg.pool_seed + 1,
                                                       per_shard=max(1, cfg.seed_set // 2)),
               "eval": gen.generate_eval(gen_dir / "eval", seed=cfg.pool_seed + 2, per_class=cfg.eval_per_class,
                                         retrieval_n=cfg.retrieval_n)}
        marker.write_text(json.dumps({"params": want, **out}, indent=2))
        return {"params": want, **out}

    g = steps.run("generate", generate)
    executor = None

    server = _serve(gen_dir, ds)
    base = server.start()
    (gen_dir / "_served.json").write_text(json.dumps({"url": base}) + "\n")
    try:
        pool_file = gen.bind_pool(gen_dir, base)
        executor = _executor(cfg)
        steps.run("ingest", _ingest, cfg, executor, pool_file, ds)
        steps.run("download", _download, executor, ds)
    finally:
        server.stop()
    steps.run("train DFN", _train_scorer, ds, gen_dir / "seed", cfg)
    model_id = steps.run("embed", _embed, ds, executor, DFN_NAME)
    lineage = steps.run("recipe", _recipe, cfg, ds, model_id)
    sizes = steps.run("subsets", _subsets, ds, lineage["output_count"], cfg.pool_seed)
    shards = {arm: steps.run(f"reshard {arm}", _reshard, ds, arm, wd / "shards" / arm, executor) for arm in ARMS}
    ev = g["eval"]
    results: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for seed in cfg.seeds:
        for arm in ARMS:
            run_dir = wd / "runs" / f"{arm}-seed{seed}"
            tr = steps.run(f"train {arm} seed {seed}", _train, shards[arm], run_dir, cfg.samples_seen, seed, cfg)
            r = steps.run(f"eval {arm} seed {seed}", _evaluate, tr["checkpoint"], ev)
            results[arm].append({"seed": seed, "metrics": r, "checkpoint": tr["checkpoint"],
                                 "loss_last": tr.get("loss_last"), "train_seconds": tr.get("wall_s")})
    comparison = _comparison(cfg, results, sizes, model_id)
    comp_path = wd / "comparison.json"
    comp_path.write_text(json.dumps(comparison, indent=2, sort_keys=True) + "\n")
    report = steps.run("report", _report, ds, comp_path, wd / "report.html")
    total = round(time.perf_counter() - t0, 1)
    summary = {"config": cfg.to_dict(), "timings_s": steps.timings, "cpu_s": steps.cpu, "total_s": total,
               "total_cpu_s": round(sum(steps.cpu.values()), 1), "report": str(report),
               "comparison": str(comp_path), "margins": comparison["margins"], "noise": g["pool"]["noise"],
               "recipe_funnel": [(s["name"], s["input_count"], s["output_count"]) for s in lineage["stages"]],
               "curation_quality": _quality(ds, gen_dir, "curated")}
    (wd / "demo.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    _print_summary(comparison, summary)
    return summary


# ---------------------------------------------------------------- steps
def _serve(gen_dir: Path, ds):
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


def _ingest(cfg: DemoConfig, executor, pool_file: Path, ds) -> dict:
    from curate.ingest.job import IngestConfig, run_ingest

    return run_ingest(executor, IngestConfig(inputs=[str(pool_file)], output=str(ds.root), rows_per_shard=100_000))


def _download(executor, ds) -> dict:
    from curate.download.job import DownloadOptions, run_download
    from curate.download.safety import FetchPolicy

    if ds.has_table("downloads") and (ds.root / "_runs" / "download.json").exists():
        return json.loads((ds.root / "_runs" / "download.json").read_text())["counts"]
    # the demo's web is 127.0.0.1: allow exactly that address, nothing else private
    opts = DownloadOptions(policy=FetchPolicy(allow_networks=["127.0.0.1/32"]), thread_count=16,
                           samples_per_shard=2000, timeout=5.0)
    return run_download(ds, executor, opts)


def _train(data, out: Path, samples_seen: int, seed: int, cfg: DemoConfig, batch_size: int | None = None) -> dict:
    from curate.train import train

    bs = batch_size or cfg.batch_size
    return train(data, out, preset="tiny", seed=seed, samples_seen=samples_seen, batch_size=bs,
                 warmup=max(1, samples_seen // bs // 8), threads=cfg.threads)


def _train_scorer(ds, seed_shards: Path, cfg: DemoConfig) -> dict:
    """`curate scorer train DATASET --seed-set generated/seed --name dfn` at the demo's budget."""
    from curate.train.scorer import train_scorer

    n, bs = cfg.dfn_samples_seen, cfg.dfn_batch_size
    return train_scorer(ds, DFN_NAME, str(seed_shards), preset="tiny", seed=0, samples_seen=n, batch_size=bs,
                        warmup=max(1, n // bs // 8), threads=cfg.threads)


def _embed(ds, executor, scorer: str) -> str:
    """`curate embed DATASET --model dfn`: the pool scored by the DFN (clip_score = DFN score)."""
    from curate.embed.job import EmbedOptions, run_embed

    stats = run_embed(ds, executor, EmbedOptions(model=scorer, device="cpu"))
    return stats["model_id"]


def _recipe(cfg: DemoConfig, ds, model_id: str) -> dict:
    from curate.recipe import load_recipe, run_recipe

    loaded = load_recipe(cfg.recipe or RECIPES_DIR / "demo.yaml")
    loaded.recipe.dataset = str(ds.root)
    loaded.recipe.embedding_model = model_id
    loaded.recipe.output = "curated"
    return run_recipe(loaded, engine=cfg.engine, master=cfg.master)


def _subsets(ds, curated_size: int, seed: int) -> dict:
    """raw = every downloaded sample; random = a uniform sample of it as large as curated."""
    from curate.recipe.runner import initial_uids
    from curate.recipe.stages.sample import sample_uids
    from curate.subset import write_subset

    raw = initial_uids(ds, "downloaded")
    write_subset(ds, "raw", raw, {"stage": "demo", "what": "every downloaded sample"})
    rnd = sample_uids(raw, None, curated_size, seed)
    write_subset(ds, "random", rnd, {"stage": "demo", "what": f"uniform sample of raw, size of curated, seed {seed}"})
    return {"raw": len(raw), "random": len(rnd), "curated": curated_size}


def _reshard(ds, subset: str, out: Path, executor) -> str:
    from curate.reshard.job import reshard

    if (out / "meta.json").exists():
        return str(out)
    reshard(ds, subset=subset, output=out, shard_size=2000, overwrite=True, executor=executor)
    return str(out)


def _evaluate(checkpoint: str, ev: dict) -> dict:
    from curate.evaluate.tasks import evaluate

    res = evaluate(checkpoint, zeroshot=[ev["zeroshot"]], retrieval_sets=[ev["retrieval"]], templates="default",
                   device="cpu")
    zs = next(iter(res["zeroshot"].values()))
    rt = next(iter(res["retrieval"].values()))
    out = {"zeroshot_top1": zs["top1"], "zeroshot_mean_per_class_recall": zs.get("mean_per_class_recall")}
    for k in ("image_to_text_R@1", "image_to_text_R@5", "text_to_image_R@1", "text_to_image_R@5", "mean_recall"):
        out[f"retrieval_{k}"] = rt.get(k)
    return {k: float(v) for k, v in out.items() if v is not None}


def _comparison(cfg: DemoConfig, results: dict, sizes: dict, model_id: str) -> dict:
    metrics = sorted({m for runs in results.values() for r in runs for m in r["metrics"]})
    means = {arm: {m: float(np.mean([r["metrics"][m] for r in runs if m in r["metrics"]])) for m in metrics}
             for arm, runs in results.items()}
    margins = {other: {m: means["curated"][m] - means[other][m] for m in metrics} for other in ("raw", "random")}
    # per-seed wins: how often curated beats each baseline on the headline metric with the same seed
    head = "zeroshot_top1"
    wins = {other: sum(c["metrics"].get(head, 0) > o["metrics"].get(head, 0)
                       for c, o in zip(results["curated"], results[other])) for other in ("raw", "random")}
    return {
        "title": f"Tiny CLIP baselines: {cfg.samples_seen:,} samples seen each, {len(cfg.seeds)} seeds",
        "note": ("Same model, preset, batch size and samples seen for every arm; only the training subset "
                 "differs. raw = every downloaded sample; random = a uniform sample of raw as large as "
                 "curated; curated = the demo recipe (filters scored by a DFN trained on a clean seed set). "
                 "Evaluated on a separately generated clean set (zero-shot colour+shape classes, retrieval)."),
        "samples_seen": cfg.samples_seen, "metrics": metrics, "scorer": model_id,
        "arms": [{"name": arm, "size": sizes[arm], "runs": results[arm]} for arm in ARMS],
        "means": means, "margins": margins, "seed_wins_zeroshot_top1": wins,
    }


def _report(ds, comparison: Path, out: Path) -> Path:
    from curate.report import build_report

    return build_report(ds, "curated", out=out, comparison=comparison, pool_subset="raw",
                        title="curate demo: procedural pool, DFN-scored recipe, tiny baselines")


def _quality(ds, gen_dir: Path, subset: str) -> dict:
    """Share of each noise kind in raw vs the curated subset, from the generator's ground truth;
    with the truth's duplicate sources, the redundant copies left (members of a true duplicate
    group beyond the first) and the perceptual stage's precision and recall."""
    import pyarrow.parquet as pq

    from curate.subset import read_subset

    tt = pq.read_table(gen_dir / "truth.parquet")
    truth = tt.select([c for c in ("url", "noise", "source") if c in tt.column_names]).to_pylist()
    by_path = {t["url"].split("/img/", 1)[1]: t for t in truth}
    samples = ds.read("samples", columns=["uid", "url"])
    row_of = {u: by_path.get(url.split("/img/", 1)[-1], {}) for u, url in
              zip(samples.column("uid").to_pylist(), samples.column("url").to_pylist())}
    out: dict = {}
    for name in ("raw", subset):
        uids = read_subset(ds, name)
        counts: dict[str, int] = {}
        for u in uids:
            k = row_of.get(u, {}).get("noise", "?")
            counts[k] = counts.get(k, 0) + 1
        out[name] = {"n": len(uids), "share": {k: round(v / max(1, len(uids)), 4) for k, v in sorted(counts.items())}}
        if "source" in tt.column_names:
            sources = [row_of.get(u, {}).get("source") for u in uids]
            out[name]["redundant_copies"] = round((len(uids) - len(set(sources))) / max(1, len(uids)), 4)
            # the near-duplicate share: copies of a picture beyond one, in the groups that hold a
            # web-style copy (labelled near_duplicate); a group's one survivor is not a duplicate
            # in the subset, whichever member it is
            groups: dict = {}
            for u, src in zip(uids, sources):
                groups.setdefault(src, []).append(row_of.get(u, {}).get("noise"))
            extra = sum(len(g) - 1 for g in groups.values() if len(g) > 1 and "near_duplicate" in g)
            out[name]["near_duplicate_copies"] = round(extra / max(1, len(uids)), 4)
    if "source" in tt.column_names:
        out["perceptual"] = _perceptual_quality(ds, {u: r.get("source") for u, r in row_of.items()})
    return out


def _perceptual_quality(ds, source: dict) -> dict | None:
    """Precision (removals whose survivor shows the same source picture), recall (redundant
    copies in the stage's input that it removed) and distinct pictures removed, of the recipe's
    perceptual_dedup stage, against the generator's truth."""
    runs = [t for t in ds.tables() if t.startswith("decisions/recipe-") and t.endswith("perceptual_dedup")]
    if not runs:
        return None
    dec = ds.read(runs[0], columns=["uid", "kept", "reason", "detail"]).to_pylist()
    removed = [d for d in dec if d["reason"] == "perceptual_duplicate"]
    good = sum(source.get(d["uid"]) == source.get(d["detail"]) for d in removed)
    inputs = [source.get(d["uid"]) for d in dec if d["reason"] in ("kept", "perceptual_duplicate")]
    redundant = len(inputs) - len(set(inputs))
    kept_sources = {source.get(d["uid"]) for d in dec if d["kept"]}
    lost = len(set(inputs) - kept_sources)
    return {"table": runs[0], "input": len(inputs), "removed": len(removed), "true_removals": good,
            "precision": round(good / len(removed), 4) if removed else None,
            "redundant_in_input": redundant, "recall": round(good / redundant, 4) if redundant else None,
            "distinct_pictures_lost": lost, "distinct_lost_share": round(lost / max(1, len(set(inputs))), 4)}


def _short(metric: str) -> str:
    return (metric.replace("retrieval_image_to_text_", "retrieval i->t ").replace("retrieval_text_to_image_", "retrieval t->i ")
            .replace("zeroshot_", "zero-shot ").replace("_", " "))


def _print_summary(comparison: dict, summary: dict) -> None:
    info("")
    info(comparison["title"])
    metrics = comparison["metrics"]
    arms = comparison["arms"]
    # One row a metric, one column an arm (mean ± std over seeds), then the margins: fits 100 columns.
    others = list(comparison["margins"])
    heads = [f"{a['name']} ({a['size']:,})" for a in arms]
    info(f"{'metric':<31}" + "".join(f"{h:>17}" for h in heads) + "".join(f"{'cur-' + o:>11}" for o in others))
    for m in metrics:
        cells = []
        for a in arms:
            v = [r["metrics"][m] for r in a["runs"] if m in r["metrics"]]
            cells.append(f"{np.mean(v):>9.3f} ± {np.std(v):.3f}")
        info(f"{_short(m):<31}" + "".join(f"{c:>17}" for c in cells)
             + "".join(f"{comparison['margins'][o].get(m, float('nan')):>+11.3f}" for o in others))
    info(f"seeds where curated beats (zero-shot top-1): {comparison['seed_wins_zeroshot_top1']}")
    q = summary["curation_quality"]
    info("noise share raw -> curated: " + ", ".join(
        f"{k} {q['raw']['share'].get(k, 0):.1%}->{q['curated']['share'].get(k, 0):.1%}"
        for k in sorted(q["raw"]["share"]) if k != "clean"))
    if "redundant_copies" in q["raw"]:
        info(f"redundant copies (true duplicate groups beyond one) raw -> curated: "
             f"{q['raw']['redundant_copies']:.1%} -> {q['curated']['redundant_copies']:.1%}, of them near-duplicate "
             f"copies {q['raw']['near_duplicate_copies']:.1%} -> {q['curated']['near_duplicate_copies']:.1%}; "
             f"perceptual stage: {q.get('perceptual')}")
    info(f"report: {summary['report']}   total {summary['total_s']:.0f}s")
