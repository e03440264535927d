"""`curate metadata build`'s bigram mining at pool scale: what reaches the driver, and its memory.

Synthetic captions: words drawn from a Zipfian vocabulary (so the grams seen ``--min-count``
times grow with the pool, as real captions' do), plus planted two-word names (the high-PMI
bigrams a build mines). Each step runs in its own process on Spark local mode:

- ``engine``: ``curate.metaclip.bigram_mining.mine_bigrams``, the bigrams scored by the workers;
- ``driver-side scoring (before)``, the baseline in the same run: the counts summed by the
  engine as before, every gram seen ``--min-count`` times collected to the driver, PMI in
  Python there (``metadata.pmi_bigrams``), which is what the build did until session 21.

Prints wall time, the rows that reached the driver, the driver's and the process tree's peak
RSS per step and pool size, and the growth from the smallest to the largest size (the driver's
RSS target as bench/scale.py's: <= 1.2x). Both steps must mine the same list (checked).

    python bench/bigram_mining.py --sizes 250000,500000,1000000 [--json PATH]
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import TARGET_RSS, run_measured, step_sweep_parser  # noqa: E402 - bench/scale.py's /proc polling

SHARD_ROWS = 100_000
STEPS = ("engine", "driver-side scoring (before)")
MIN_COUNT, MIN_PMI = 10, 8.0


def build(root: Path, rows: int, seed: int = 0) -> None:
    """``samples`` shards holding a ``text`` column of synthetic captions."""
    rng = np.random.default_rng(seed)
    (root / "samples").mkdir(parents=True, exist_ok=True)
    for s, start in enumerate(range(0, rows, SHARD_ROWS)):
        n = min(SHARD_ROWS, rows - start)
        lengths = rng.integers(5, 13, n)
        words = np.minimum(rng.zipf(1.15, int(lengths.sum())), 5_000_000).astype(str)
        words = np.char.add("w", words)
        cuts = np.cumsum(lengths)[:-1]
        texts = [" ".join(c) for c in np.split(words, cuts)]
        names = rng.integers(0, 2000, n)  # a planted name in one caption of 10: "north3 bridge3"
        texts = [f"{t} north{k} bridge{k}" if i % 10 == 0 else t for i, (t, k) in enumerate(zip(texts, names))]
        pq.write_table(pa.table({"text": pa.array(texts, pa.string())}), root / "samples" / f"part-{s:05d}.parquet")


def step(root: str, name: str) -> dict:
    from curate.engine.factory import open_executor
    from curate.metaclip.build_job import ngram_count_task
    from curate.metaclip.metadata import NGRAM_SCHEMA, pmi_bigrams
    from curate.tables import Dataset

    ds = Dataset(root)
    ex = open_executor("spark", "local[2]", [], app_name="bench-bigrams")
    tasks = [{"input": str(p)} for p in ds.shards("samples")]
    if name == "engine":
        from curate.metaclip.bigram_mining import mine_bigrams

        mined, total = mine_bigrams(ex, tasks, ngram_count_task, NGRAM_SCHEMA, MIN_COUNT, MIN_PMI)[""]
    else:  # as the build did before: every frequent gram to the driver, scored there
        summed = ex.sum_task_rows(tasks, ngram_count_task, NGRAM_SCHEMA, ["gram", "order"], "n", MIN_COUNT)
        uni, bi, total = {}, {}, 0
        for g, o, n in zip(summed["gram"].to_pylist(), summed["order"].to_pylist(), summed["n"].to_pylist()):
            if o == 0:
                total = n
            else:
                (uni if o == 1 else bi)[g] = n
        mined = pmi_bigrams(uni, bi, total, MIN_COUNT, MIN_PMI)
    driver_rows = ex.driver_counter.driver_rows if name == "engine" else summed.num_rows
    return {"mined": len(mined), "words": total, "driver_rows": driver_rows,
            "digest": hashlib.sha256(json.dumps([(b.text, b.count, b.pmi) for b in mined]).encode()).hexdigest()}


def run_step(root: Path, name: str) -> dict:
    r, done = run_measured([sys.executable, __file__, "--step", name, "--root", str(root)])
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), **r}


def main(argv=None) -> int:
    a = step_sweep_parser(__doc__, "250000,500000,1000000").parse_args(argv)
    if a.step:
        print(json.dumps(step(a.root, a.step)))
        return 0
    sizes = [int(s) for s in a.sizes.split(",")]
    work = Path(a.workdir or tempfile.mkdtemp(prefix="curate-bench-bigrams-"))
    results: dict[str, dict] = {}
    for n in sizes:
        root = work / f"pool-{n}"
        build(root, n)
        results[str(n)] = {}
        for name in STEPS:
            r = run_step(root, name)
            results[str(n)][name] = r
            print(f"{n:>10,} captions  {name:<29} {r['wall_s']:6.1f} s  driver rows {r['driver_rows']:>9,}  "
                  f"mined {r['mined']:>6,}  driver {r['driver_peak_rss'] / 2**20:5.0f} MiB  "
                  f"tree {r['tree_peak_rss'] / 2**20:6.0f} MiB", flush=True)
        a_, b_ = results[str(n)][STEPS[0]], results[str(n)][STEPS[1]]
        if (a_["mined"], a_["digest"]) != (b_["mined"], b_["digest"]):
            raise SystemExit(f"{n:,} captions: the two steps mined different lists")
        shutil.rmtree(root)
    small, large = results[str(sizes[0])], results[str(sizes[-1])]
    growth = {name: {"driver_rss": large[name]["driver_peak_rss"] / small[name]["driver_peak_rss"],
                     "driver_rows": large[name]["driver_rows"] / max(1, small[name]["driver_rows"])}
              for name in STEPS}
    print(f"growth {sizes[0]:,} -> {sizes[-1]:,} captions (target: driver RSS <= {TARGET_RSS}x)")
    for name, g in growth.items():
        print(f"  {name:<29} driver RSS x{g['driver_rss']:.2f}  driver rows x{g['driver_rows']:.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"sizes": sizes, "results": results, "growth": growth}, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
