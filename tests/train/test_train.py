from __future__ import annotations

from pathlib import Path

import pytest
import torch

from curate.train import TrainError, get_preset, plan_steps, train


def test_plan_steps_gives_equal_samples_seen_whatever_the_data_size():
    p = plan_steps(samples_seen=1000, batch_size=64, checkpoints=2)
    assert p == {"train_num_samples": 500, "epochs": 2, "steps_per_epoch": 8, "steps": 16, "samples_seen": 1024}
    assert plan_steps(64, 128, 1)["samples_seen"] == 128  # at least one full batch
    # open_clip_train gives each data-loader worker as many batches: 4 batches on 3 workers are 6
    # (the log showed [768/768] where train.json said 512)
    assert plan_steps(512, 128, 1, workers=3)["samples_seen"] == 768 and plan_steps(384, 128, 1, 2)["steps"] == 4
    assert plan_steps(512, 128, 1, workers=0) == plan_steps(512, 128, 1, workers=1)
    small = get_preset("small")
    assert (small.model, small.samples_seen, small.batch_size, small.lr, small.warmup) == (
        "ViT-B-32", 12_800_000, 4096, 5e-4, 500)
    xl = get_preset("xlarge")
    assert (xl.model, xl.batch_size, xl.lr, xl.warmup, xl.beta2) == ("ViT-L-14", 90_112, 1e-3, 10_000, 0.95)
    assert get_preset("large", lr=1e-4).lr == 1e-4
    with pytest.raises(Exception, match="unknown preset"):
        get_preset("huge")


def test_tiny_training_writes_weights_only_checkpoints_and_resumes(shards, tmp_path):
    import random

    out = tmp_path / "run"
    random.seed(123)
    info = train(shards, out, "tiny", seed=1, samples_seen=64, batch_size=16)
    assert random.random() == random.Random(123).random()  # the caller's RNG is left alone
    assert info["samples_seen"] == 64 and info["steps"] == 4 and info["epochs"] == 1
    assert info["data"]["samples"] == 48 and info["passes_over_data"] == pytest.approx(64 / 48, abs=1e-3)
    assert info["data"]["path"] == str(Path(shards).resolve())  # absolute, as the checkpoint's path is
    assert info["loss_first"] is not None and info["loss_last"] is not None
    for ck in (info["checkpoint"], info["train_checkpoint"]):
        sd = torch.load(ck, map_location="cpu", weights_only=True)["state_dict"]
        assert "visual.conv1.weight" in sd
    # the argument list is open_clip_train's own, DataComp style
    argv = info["argv"]
    assert "--dataset-resampled" in argv and argv[argv.index("--train-num-samples") + 1] == "64"
    assert (out / "out.log").exists() and (out / "params.txt").exists()

    from curate.models import load_model

    bundle = load_model("curate-tiny", pretrained=info["checkpoint"])
    with torch.no_grad():
        f = bundle.model.encode_text(bundle.tokenizer(["a red square"]))
    assert f.shape == (1, 64)

    # same call: the finished run comes back as is
    mtime = (out / "model.pt").stat().st_mtime_ns
    assert train(shards, out, "tiny", seed=1, samples_seen=64, batch_size=16)["config_hash"] == info["config_hash"]
    assert (out / "model.pt").stat().st_mtime_ns == mtime
    # interrupted after the last checkpoint: the rerun resumes instead of starting over
    (out / "train.json").unlink()
    (out / "model.pt").unlink()
    again = train(shards, out, "tiny", seed=1, samples_seen=64, batch_size=16)
    assert again["samples_seen"] == 64 and (out / "model.pt").exists()
    assert again["samples_this_launch"] == 0  # it resumed after its last checkpoint: nothing left to train
    assert info["samples_this_launch"] == 64
    with pytest.raises(TrainError, match="another training run"):
        train(shards, out, "tiny", seed=2, samples_seen=64, batch_size=16)


def test_a_pretrained_file_that_is_no_checkpoint_is_one_line_before_training(shards, tmp_path):
    """open_clip_train raised a KeyError traceback for a text file given as --pretrained."""
    from curate.errors import CurateError

    (tmp_path / "notes.pt").write_text("hello\n")
    with pytest.raises(CurateError, match=r"notes.pt is not a PyTorch or safetensors file"):
        train(shards, tmp_path / "run", pretrained=str(tmp_path / "notes.pt"), samples_seen=32, batch_size=16)
    assert not (tmp_path / "run" / "model.pt").exists()


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(TrainError, match="does not exist"):
        train(tmp_path / "nope", tmp_path / "run")


def test_shards_with_no_trainable_sample_are_refused_not_waited_on_forever(tmp_path):
    """An empty tar, or samples without a .txt caption: open_clip_train's resampling drew shards
    forever (the run hung at 'Start epoch 0' with no message)."""
    import io
    import tarfile

    for name, members in (("empty", []), ("nocaption", [("0001.jpg", b"\xff\xd8"), ("0001.json", b"{}")])):
        folder = tmp_path / name
        folder.mkdir()
        with tarfile.open(folder / "a.tar", "w") as tf:
            for member, data in members:
                ti = tarfile.TarInfo(member)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
        with pytest.raises(TrainError, match="no sample in its 1 shard\\(s\\) has an image .* and a .txt caption"):
            train(folder, tmp_path / f"run-{name}", samples_seen=32, batch_size=16)
    # a file that is no archive at all is said as such (it was 'no sample ... has an image')
    (tmp_path / "text.tar").write_text("not a tar\n")
    with pytest.raises(TrainError, match=r"text.tar: no shard is a readable tar archive \(the first: .*text.tar"):
        train(tmp_path / "text.tar", tmp_path / "run-text", samples_seen=32, batch_size=16)


def test_the_same_seed_trains_the_same_model(shards, tmp_path):
    """open_clip_train's sample shuffle seeded itself from the pid and the clock, so two runs of
    one seed differed from the first step; now it draws from the seeded worker seed (with data-
    loader workers too), and a CPU run is repeated bit for bit. Another seed is another model."""
    def weights(out, seed, workers=0):
        info = train(shards, out, "tiny", seed=seed, samples_seen=96, batch_size=16, workers=workers)
        return info, torch.load(info["checkpoint"], map_location="cpu", weights_only=True)["state_dict"]

    a, wa = weights(tmp_path / "a", 3)
    b, wb = weights(tmp_path / "b", 3)
    assert a["loss_first"] == b["loss_first"] and a["loss_last"] == b["loss_last"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    _, wc = weights(tmp_path / "c", 4)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    _, w1 = weights(tmp_path / "w1", 3, workers=2)
    _, w2 = weights(tmp_path / "w2", 3, workers=2)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


@pytest.mark.parametrize("option, value, said", [("--samples-seen", "0", "must be > 0"), ("--samples-seen", "-5", "must be > 0"),
                                                 ("--checkpoints", "0", "must be >= 1"), ("--lr", "-1", "must be > 0")])
def test_budgets_no_run_can_have_are_refused(tmp_path, capsys, option, value, said):
    """--samples-seen 0 trained 128 samples, --checkpoints 0 became 1, --lr -1 was a traceback."""
    from curate.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", str(tmp_path), "-o", str(tmp_path / "run"), option, value])
    assert e.value.code == 2 and f"curate: error: {option} {said}" in capsys.readouterr().err


def test_what_open_clip_train_would_refuse_is_one_line_before_the_folder_is_used(shards, tmp_path, capsys):
    """An extra argument open_clip_train's parser rejects exited 2 with nothing said (its stderr is
    silenced); an unknown architecture was a traceback; both left the folder marked as used, so
    the corrected command was refused."""
    from curate.cli import main

    out = tmp_path / "run"
    refused = "open_clip_train refuses the arguments: unrecognized arguments: --bogus-flag"
    for argv, said in ((["--", "--bogus-flag"], refused), (["--model", "bogus-model"], "unknown model 'bogus-model'")):
        with pytest.raises(SystemExit) as e:
            main(["train", str(shards), "-o", str(out), "--samples-seen", "32", "--batch-size", "16", *argv])
        assert e.value.code == 2 and said in capsys.readouterr().err
    assert not (out / "_config_hash").exists()
    info = train(shards, out, "tiny", seed=0, samples_seen=32, batch_size=16)
    assert info["samples_seen"] == 32
