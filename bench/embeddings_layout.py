"""Benchmark: decode cost of an embeddings table's Parquet layouts (100k x 512 float16 by default).

One shard of bench/dedup.py's Gaussian-mixture embeddings (unit rows, float16) is written in
each layout, then read back the way the vector jobs read it (``pq.read_table`` of the uid and
image_embedding columns, then ``vectors.list_to_matrix`` or a buffer view into an (n, d) float16
matrix), best of ``--repeat`` reads, in one process. Printed: file size, decode seconds (wall and
CPU) and the ratio against today's layout:

- ``dict+zstd`` (what ``PARQUET_OPTIONS`` wrote until 2026-12-02): ``fixed_size_list<halffloat>``,
  dictionary-encoded, ZSTD;
- ``plain+zstd``: the same logical type with ``use_dictionary`` off for the vector columns;
- ``bss+zstd``: the same, BYTE_STREAM_SPLIT asked for the vector columns (pyarrow 26 writes
  PLAIN for halffloat anyway: the encodings used are printed);
- ``plain`` / ``bss``: the same two without compression for the vector columns;
- ``fixed_size_binary+zstd`` / ``fixed_size_binary``: one ``fixed_size_binary(2d)`` value a row
  (changes the logical type: every reader would need to know it);

    .venv/bin/python bench/embeddings_layout.py [--n 100000] [--d 512] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

VECTORS = ["image_embedding", "text_embedding"]


def layouts(base: dict) -> dict:
    """name -> (writer options, vectors as fixed_size_binary?)."""
    plain = {**base, "use_dictionary": ["uid"]}
    # per-column codecs: the level only for the compressed columns (none takes no level)
    raw = {**plain, "compression": {"uid": "zstd", "clip_score": "zstd", **{c: "none" for c in VECTORS}},
           "compression_level": {"uid": base["compression_level"], "clip_score": base["compression_level"]}}
    return {
        "dict+zstd": ({**base, "use_dictionary": True}, False),
        "plain+zstd": (plain, False),
        "bss+zstd": ({**plain, "column_encoding": {c: "BYTE_STREAM_SPLIT" for c in VECTORS}}, False),
        "plain": (raw, False),
        "bss": ({**raw, "column_encoding": {c: "BYTE_STREAM_SPLIT" for c in VECTORS}}, False),
        "fixed_size_binary+zstd": (plain, True),
        "fixed_size_binary": (raw, True),
    }


def as_fsb(x: np.ndarray) -> pa.Array:
    n, d = x.shape
    return pa.Array.from_buffers(pa.binary(2 * d), n, [None, pa.py_buffer(np.ascontiguousarray(x))])


def fsb_matrix(arr, d: int) -> np.ndarray:
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    return np.frombuffer(arr.buffers()[1], np.float16)[arr.offset * d:(arr.offset + len(arr)) * d].reshape(-1, d)


def main(argv=None) -> int:
    from dedup import make_data

    from curate.embedding_space.vectors import list_to_matrix
    from curate.tables.atomic import PARQUET_OPTIONS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    x, uids, _, _ = make_data(a.n, a.d, 1000, 0.1)
    y = x[::-1].copy()
    uid = pa.array(uids.tolist(), pa.string())
    score = pa.array(np.ones(a.n, np.float32))
    fsl = pa.FixedSizeListArray.from_arrays
    base = dict(PARQUET_OPTIONS)
    print(f"{a.n:,} x {a.d} float16, pyarrow {pa.__version__}, load average {os.getloadavg()[0]:.1f}; "
          f"decode = read uid + image_embedding, then the (n, d) float16 matrix; best of {a.repeat}")
    rows, ref = [], None
    with tempfile.TemporaryDirectory(prefix="curate-layout-") as tmp:
        for name, (opts, binary) in layouts(base).items():
            cols = [as_fsb(x), as_fsb(y)] if binary else [fsl(pa.array(x.reshape(-1)), a.d), fsl(pa.array(y.reshape(-1)), a.d)]
            t = pa.table({"uid": uid, VECTORS[0]: cols[0], VECTORS[1]: cols[1], "clip_score": score})
            p = Path(tmp) / f"{name}.parquet"
            try:
                w0 = time.perf_counter()
                pq.write_table(t, p, row_group_size=65536, **opts)
                write_s = time.perf_counter() - w0
            except (pa.ArrowException, ValueError) as e:
                print(f"  {name:<24} not writable: {e}")
                continue
            best_w, best_c = float("inf"), float("inf")
            for _ in range(a.repeat):
                w0, c0 = time.perf_counter(), time.process_time()
                r = pq.read_table(p, columns=["uid", VECTORS[0]])
                m = fsb_matrix(r.column(1), a.d) if binary else list_to_matrix(r.column(1))
                best_w = min(best_w, time.perf_counter() - w0)
                best_c = min(best_c, time.process_time() - c0)
            assert np.array_equal(m.view(np.uint16), x.view(np.uint16)), name
            if ref is None:
                ref = best_c
            rows.append((name, p.stat().st_size, write_s, best_w, best_c))
            # the encodings the writer really used (it may ignore a requested one for a type)
            rg = pq.ParquetFile(p).metadata.row_group(0)
            enc = next(rg.column(i).encodings for i in range(rg.num_columns)
                       if rg.column(i).path_in_schema.startswith(VECTORS[0]))
            print(f"  {name:<24} {p.stat().st_size / 2**20:7.1f} MiB  write {write_s:5.2f} s  decode {best_w:6.3f} s wall "
                  f"{best_c:6.3f} s cpu  {best_c / ref:5.2f}x today's  {'/'.join(enc)}", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
