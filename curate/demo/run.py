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
The steps are in ``curate.demo.steps``, the comparison and summary in ``curate.demo.summary``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from curate.demo import steps as st
from curate.demo.config import SCALES, DemoConfig  # noqa: F401 - re-exported (curate demo)
from curate.demo.summary import ARMS, compare_arms, curation_quality, print_summary
from curate.progress import info


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


def _generate(cfg: DemoConfig, gen_dir: Path) -> dict:
    """The pool, the seed set and the eval set, unless generated before with the same settings."""
    from curate.demo import pool as gen

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


def _fetch_pool(cfg: DemoConfig, steps: _Steps, gen_dir: Path, ds):
    """Serve the pool on 127.0.0.1, ingest and download it; returns the demo's executor."""
    from curate.demo import pool as gen

    server = st.serve_pool(gen_dir, ds)
    base = server.start()
    (gen_dir / "_served.json").write_text(json.dumps({"url": base}) + "\n")
    try:
        pool_file = gen.bind_pool(gen_dir, base)
        executor = _executor(cfg)
        steps.run("ingest", st.ingest_pool, cfg, executor, pool_file, ds)
        steps.run("download", st.download_pool, executor, ds)
    finally:
        server.stop()
    return executor


def _train_and_evaluate(cfg: DemoConfig, steps: _Steps, wd: Path, shards: dict, ev: dict) -> dict[str, list[dict]]:
    """Each arm trained once per seed (same samples seen), each model evaluated."""
    results: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for seed in cfg.seeds:
        for arm in ARMS:
            run_dir = wd / "runs" / f"{arm}-seed{seed}"
            tr = steps.run(f"train {arm} seed {seed}", st.train_arm, shards[arm], run_dir, cfg.samples_seen, seed, cfg)
            r = steps.run(f"eval {arm} seed {seed}", st.evaluate_arm, tr["checkpoint"], ev)
            results[arm].append({"seed": seed, "metrics": r, "checkpoint": tr["checkpoint"],
                                 "loss_last": tr.get("loss_last"), "train_seconds": tr.get("wall_s")})
    return results


def run_demo(cfg: DemoConfig) -> dict:
    from curate.tables import Dataset

    wd = Path(cfg.workdir).resolve()
    wd.mkdir(parents=True, exist_ok=True)
    steps = _Steps()
    t0 = time.perf_counter()
    gen_dir, ds = wd / "generated", Dataset(wd / "dataset")
    g = steps.run("generate", _generate, cfg, gen_dir)
    executor = _fetch_pool(cfg, steps, gen_dir, ds)
    steps.run("train DFN", st.train_dfn, ds, gen_dir / "seed", cfg)
    model_id = steps.run("embed", st.embed_pool, ds, executor, st.DFN_NAME)
    lineage = steps.run("recipe", st.run_demo_recipe, cfg, ds, model_id)
    sizes = steps.run("subsets", st.write_baseline_subsets, ds, lineage["output_count"], cfg.pool_seed)
    shards = {arm: steps.run(f"reshard {arm}", st.reshard_arm, ds, arm, wd / "shards" / arm, executor)
              for arm in ARMS}
    results = _train_and_evaluate(cfg, steps, wd, shards, g["eval"])
    comparison = compare_arms(cfg, results, sizes, model_id)
    comp_path = wd / "comparison.json"
    comp_path.write_text(json.dumps(comparison, indent=2, sort_keys=True) + "\n")
    report = steps.run("report", st.write_report, ds, comp_path, wd / "report.html", executor)
    total = round(time.perf_counter() - t0, 1)
    summary = {"config": cfg.to_dict(), "timings_s": steps.timings, "cpu_s": steps.cpu, "total_s": total,
               "total_cpu_s": round(sum(steps.cpu.values()), 1), "report": str(report),
               "comparison": str(comp_path), "margins": comparison["margins"], "noise": g["pool"]["noise"],
               "recipe_funnel": [(s["name"], s["input_count"], s["output_count"]) for s in lineage["stages"]],
               "curation_quality": curation_quality(ds, gen_dir, "curated")}
    (wd / "demo.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    print_summary(comparison, summary)
    return summary
