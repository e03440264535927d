"""MetaCLIP matching speed: Aho-Corasick matcher vs the plain `entry in text` loop.

Builds the full offline metadata (numbers, WordNet, every wordfreq word, bigrams mined from
the captions: > 300,000 entries), then, in this one process (one core):
- the matcher over all real captions of ../shared/data (repeated to --captions), in Arrow
  batches as the match job runs it (vectorised spacing + automaton);
- the plain loop over a random sample of --sample captions (it is too slow for all);
and checks both give the same ids on the sample. Prints captions/s and the ratio.

    .venv/bin/python bench/metaclip.py [--captions 500000] [--sample 200]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "metaclip"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("CURATE_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--captions", type=int, default=500_000, help="captions matched by the automaton")
    ap.add_argument("--sample", type=int, default=200, help="captions run through the plain loop")
    ap.add_argument("--batch-size", type=int, default=65536)
    args = ap.parse_args()

    from conftest import load_real_captions  # the tests' loader of ../shared/data captions

    from curate.metaclip.jobs import run_build
    from curate.metaclip.matching import Matcher, load_metadata, naive_match

    data = Path(args.data)
    if not data.is_dir():
        sys.exit(f"shared data not found at {data} (set CURATE_SHARED_DATA)")
    by_source = load_real_captions(data)
    real = [t for texts in by_source.values() for t in texts]

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text("\n".join(t.replace("\n", " ").replace("\r", " ") for t in real), encoding="utf-8")
        t0 = time.perf_counter()
        build = run_build(Path(tmp) / "metadata.json", wordfreq_top=None, wordfreq_min_frequency=0.0,
                          corpus=[str(corpus)], bigram_min_count=3, bigram_min_pmi=6.0)
        t_build = time.perf_counter() - t0
        entries = load_metadata(Path(tmp) / "metadata.json")
    print(f"metadata: {len(entries):,} entries built in {t_build:.1f} s "
          + ", ".join(f"{k} +{v['added']:,}" for k, v in build["sources"].items()))

    t0 = time.perf_counter()
    matcher = Matcher(entries)
    t_automaton = time.perf_counter() - t0
    print(f"automaton: built in {t_automaton:.2f} s (once per worker)")

    texts = (real * (args.captions // len(real) + 1))[:args.captions]
    arr = pa.array(texts, pa.string())
    # CPU seconds of this (single-threaded) process = time on one core, whatever else runs;
    # wall time is printed too.
    w0, c0 = time.perf_counter(), time.process_time()
    pairs = 0
    for start in range(0, len(arr), args.batch_size):
        out = matcher.match_array(arr.slice(start, args.batch_size))
        pairs += len(out.values)
    t_fast, wall = time.process_time() - c0, time.perf_counter() - w0
    fast_rate = len(texts) / t_fast
    print(f"automaton: {len(texts):,} captions in {t_fast:.2f} CPU s ({wall:.2f} s wall) = {fast_rate:,.0f} "
          f"captions/s per core ({pairs / len(texts):.2f} matches a caption)")

    rng = random.Random(0)
    sample = rng.sample(real, min(args.sample, len(real)))
    w0, c0 = time.perf_counter(), time.process_time()
    slow = [naive_match(t, entries) for t in sample]
    t_slow, wall = time.process_time() - c0, time.perf_counter() - w0
    slow_rate = len(sample) / t_slow
    print(f"plain loop: {len(sample):,} captions in {t_slow:.2f} CPU s ({wall:.2f} s wall) = "
          f"{slow_rate:,.1f} captions/s per core")
    same = matcher.match(sample) == slow
    print(f"same ids on the sample: {same}")
    print(f"speed-up: {fast_rate / slow_rate:,.0f}x (target >= 100x); "
          f"per core: {fast_rate:,.0f} captions/s (target >= 100,000); entries {len(entries):,} (target >= 300,000)")
    try:
        load = os.getloadavg()
        print(f"machine: {os.cpu_count()} cores, load average {load[0]:.1f} (a loaded machine slows both "
              "sides through shared caches; compare the ratio)")
    except OSError:
        pass
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
