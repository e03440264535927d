"""Multi-process training: open_clip_train under torchrun, gloo on CPU (2 ranks on this machine)."""

from __future__ import annotations

import json
import socket
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from curate.train import Launch, LaunchError, train
from curate.train.launch import distributed_args, per_rank_batch, torchrun_command

pytest.importorskip("open_clip_train")


def test_per_rank_batch_is_datacomps_arithmetic():
    assert per_rank_batch(4096, 8) == 512
    assert per_rank_batch(90_112, 128, accum_freq=2) == 352  # xlarge on 16 nodes x 8 GPUs
    assert per_rank_batch(4096, 3) == 1365  # floored, as DataComp's train.py does
    with pytest.raises(LaunchError, match="at least one sample"):
        per_rank_batch(4, 8)
    one, two = Launch(), Launch(nproc_per_node=2)
    assert distributed_args(True, one) == [] and not one.uses_torchrun
    assert distributed_args(True, two) == ["--ddp-static-graph", "--local-loss", "--gather-with-grad"]
    assert distributed_args(False, Launch(nproc_per_node=2, accum_freq=4)) == ["--ddp-static-graph", "--accum-freq", "4"]
    cmd = torchrun_command(Launch(nproc_per_node=8, nnodes=2, node_rank=1, master_addr="10.0.0.1"), ["--x"])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert cmd[cmd.index("--node-rank") + 1] == "1" and cmd[cmd.index("--master-addr") + 1] == "10.0.0.1"
    assert cmd[-3:] == ["-m", "curate.train.rank", "--x"]
    assert "--standalone" in torchrun_command(Launch(nproc_per_node=2), [])
    with pytest.raises(LaunchError, match="--master-addr"):
        Launch(nproc_per_node=8, nnodes=2)
    with pytest.raises(LaunchError, match="--node-rank"):
        Launch(nnodes=2, node_rank=2, master_addr="h")


@pytest.mark.slow
def test_two_gloo_ranks_train_the_single_process_budget_and_resume_across_world_sizes(shards, tmp_path):
    from curate.embed.core import embed_images, embed_texts
    from curate.models import load_model

    kw = dict(seed=1, samples_seen=256, batch_size=32, checkpoints=2)
    one = train(shards, tmp_path / "one", "tiny", **kw)
    two = train(shards, tmp_path / "two", "tiny", launch=Launch(nproc_per_node=2), local_loss=True, **kw)

    # the same budget: global batch 32 = 2 ranks x 16, same steps, same samples seen
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert two["per_rank_batch"] == 16 and two["global_batch"] == one["global_batch"] == 32
    assert two["samples_seen"] == one["samples_seen"] == 256 and two["steps"] == one["steps"] == 8
    argv = two["argv"]
    assert argv[argv.index("--batch-size") + 1] == "16" and "--local-loss" in argv and "--gather-with-grad" in argv
    # per-rank throughput: each rank trained both epochs on its half of every global batch
    assert [r["rank"] for r in two["ranks"]] == [0, 1]
    for r in two["ranks"]:
        assert r["epochs"] == [1, 2] and r["samples"] == 128 and r["samples_per_s"] > 0 and r["device"] == "cpu"
    assert sum(r["samples"] for r in two["ranks"]) == two["samples_seen"]
    assert two["train_samples_per_s"] > 0
    assert two["loss_last"] < two["loss_first"]

    # the result is a model curate embeds with (weights-only, DDP prefix removed)
    sd = torch.load(two["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]
    assert not any(k.startswith("module.") for k in sd)
    bundle = load_model("curate-tiny", pretrained=two["checkpoint"])
    from PIL import Image

    img = embed_images(bundle, [Image.new("RGB", (24, 24), (220, 30, 30))])
    txt = embed_texts(bundle, ["a red square", "a blue square"])
    assert img.shape == (1, 64) and txt.shape == (2, 64)
    assert np.allclose(np.linalg.norm(np.vstack([img, txt]), axis=1), 1, atol=1e-4)

    # a one-process run interrupted after its first checkpoint is finished by two ranks, here as
    # two "nodes" of one rank each on this machine (static rendezvous on 127.0.0.1, as across
    # machines); its bare keys get DDP's "module." prefix before the ranks resume from it
    run = tmp_path / "one"
    for name in ("train.json", "model.pt", "checkpoints/epoch_2.pt"):
        (run / name).unlink()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    nodes = [Launch(nproc_per_node=1, nnodes=2, node_rank=r, master_addr="127.0.0.1", master_port=port)
             for r in (1, 0)]
    pool = ThreadPoolExecutor(2)
    try:
        node1, again = [f.result(timeout=600) for f in
                        [pool.submit(train, shards, run, "tiny", launch=n, **kw) for n in nodes]]
    finally:
        pool.shutdown(wait=False)
    assert node1 == {"node_rank": 1, "world_size": 2, "output": str(run)}
    assert again["world_size"] == 2 and again["launch"]["nnodes"] == 2 and again["samples_seen"] == 256
    assert [r["epochs"] for r in again["ranks"]] == [[2], [2]]  # only the missing epoch was trained
    assert "resuming checkpoint" in (run / "out.log").read_text()
    assert (run / "torchrun-node1.log").exists()
    assert json.loads((run / "train.json").read_text())["config_hash"] == one["config_hash"]

    # and the two-rank run interrupted the same way is finished by one process
    run = tmp_path / "two"
    for name in ("train.json", "model.pt", "checkpoints/epoch_2.pt"):
        (run / name).unlink()
    back = train(shards, run, "tiny", local_loss=True, **kw)
    assert back["world_size"] == 1 and [r["epochs"] for r in back["ranks"]] == [[2]]
    assert back["config_hash"] == two["config_hash"]


def test_launch_mistakes_are_one_line_cli_errors(shards, tmp_path, capsys):
    from curate.cli import main

    def run(argv):
        with pytest.raises(SystemExit) as e:
            main(argv)
        return e.value.code, " ".join(capsys.readouterr().err.split())

    base = ["train", str(shards), "-o", str(tmp_path / "run"), "--preset", "tiny"]
    code, err = run(base + ["--nproc-per-node", "2", "--nnodes", "2"])
    assert code == 2 and "--master-addr" in err
    code, err = run(base + ["--nproc-per-node", "4", "--batch-size", "2"])
    assert code == 2 and "at least one sample" in err
    assert not (tmp_path / "run").exists()  # nothing started
