"""The live training line: a real tiny `curate train` in a subprocess, without --verbose."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from curate.train.progress import TrainPoint, format_eta, parse_line

LINE = re.compile(r"train: step (\d+)/(\d+), samples (\d+)/(\d+), loss ([0-9.]+), ([0-9.,]+) samples/s, ETA (\S+)")


def test_train_prints_progress_lines_without_verbose(shards, tmp_path):
    curate = Path(sys.executable).with_name("curate")
    out = subprocess.run([str(curate), "train", str(shards), "-o", str(tmp_path / "run"), "--samples-seen", "64",
                          "--batch-size", "16", "--progress-every", "0"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [LINE.search(x) for x in out.stderr.splitlines()]
    points = [m.groups() for m in lines if m]
    assert points, out.stderr[-2000:]  # stderr is a pipe here: plain lines, not a live bar
    steps = [int(p[0]) for p in points]
    assert steps == sorted(steps) and steps[-1] == 4 and all(int(p[1]) == 4 for p in points)
    assert [int(p[2]) for p in points] == [16 * s for s in steps] and points[-1][3] == "64"
    assert all(float(p[4]) > 0 and float(p[5].replace(",", "")) > 0 for p in points)
    assert points[-1][6] == "0:00"
    assert "Train Epoch" not in out.stderr + out.stdout  # open_clip_train's own log stays in out.log
    # the figures are open_clip_train's: the last line's loss is train.json's last loss
    import json

    info = json.loads((tmp_path / "run" / "train.json").read_text())
    assert float(points[-1][4]) == round(info["loss_last"], 4)


def test_parse_line_reads_open_clip_train_lines():
    line = ("2026-12-01,17:20:01 | INFO | Train Epoch: 1 [ 96/128 (75%)] Data (t): 0.010 Batch (t): 0.412, "
            "77.6699/s, 77.6699/s/gpu LR: 0.001000 Logit Scale: 14.290 Contrastive_loss: 2.1234 (2.5000) Loss: 2.1234 (2.5000)")
    p = parse_line(line, steps_per_epoch=4, global_batch=32, epochs=2)
    assert p == TrainPoint(step=7, steps=8, samples=224, samples_total=256, loss=2.1234, samples_per_s=77.6699)
    assert p.eta_s == (256 - 224) / 77.6699 and format_eta(3725) == "1:02:05" and format_eta(None) == "?"
    assert parse_line("2026-12-01 | INFO | Start epoch 0", 4, 32, 2) is None
