"""open_clip factory wrapper: curate's configs, pretrained checkpoints, model ids."""

from __future__ import annotations

import open_clip
import pytest
import torch

from curate.models import ModelError, list_models, load_model, model_id_for, register_configs, save_checkpoint


def test_configs_registered_with_open_clip():
    names = register_configs()
    assert {"curate-tiny", "curate-small"} <= set(names)
    assert "curate-tiny" in open_clip.list_models()
    assert "curate-tiny" in list_models()
    cfg = open_clip.get_model_config("curate-tiny")
    assert cfg["embed_dim"] == 64 and cfg["vision_cfg"]["image_size"] == 32


def test_random_init_is_seeded_and_shapes_are_right():
    a = load_model("curate-tiny", seed=3)
    b = load_model("curate-tiny", seed=3)
    assert a.model_id == "curate-tiny__random-seed3"
    assert a.embed_dim == 64 and a.image_size == (32, 32) and a.precision == "fp32"
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    tokens = a.tokenizer(["a photo of a dog"])
    assert tokens.shape == (1, 32)
    assert not a.model.training


def test_local_checkpoint_round_trip(tmp_path):
    src = load_model("curate-tiny", seed=1)
    with torch.no_grad():  # make the weights differ from any seed's init
        for p in src.model.parameters():
            p.add_(0.01)
    ckpt = save_checkpoint(src.model, tmp_path / "epoch_2.pt", epoch=2)
    loaded = load_model("curate-tiny", pretrained=str(ckpt))
    for (k, va), vb in zip(src.model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(va, vb), k
    assert loaded.model_id.startswith("curate-tiny__epoch_2-")
    assert loaded.model_id == model_id_for("curate-tiny", str(ckpt))
    # same bytes elsewhere -> same id; the id is a safe folder name
    copy = tmp_path / "sub" / "epoch_2.pt"
    copy.parent.mkdir()
    copy.write_bytes(ckpt.read_bytes())
    assert model_id_for("curate-tiny", str(copy)) == loaded.model_id
    assert "/" not in loaded.model_id
    # a plain state dict (no wrapper) loads too
    torch.save(src.model.state_dict(), tmp_path / "plain.pt")
    plain = load_model("curate-tiny", pretrained=str(tmp_path / "plain.pt"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(plain.model.encode_image(x), src.model.encode_image(x))


def test_bad_names_and_weights_are_clear(tmp_path):
    with pytest.raises(ModelError, match="unknown model 'no-such-model'"):
        load_model("no-such-model")
    with pytest.raises(ModelError, match="unknown model 'vit-b-32'; did you mean ViT-B-32"):  # case is a typo too
        load_model("vit-b-32")
    with pytest.raises(ModelError, match="neither a checkpoint file nor a pretrained tag"):
        load_model("curate-tiny", pretrained="laion2b_s34b_b79k")
    with pytest.raises(ModelError, match="does not exist"):
        load_model("curate-tiny", pretrained=str(tmp_path / "missing.pt"))
    with pytest.raises(ModelError, match="precision"):
        load_model("curate-tiny", precision="int3")
    # a checkpoint of another architecture fails naming the file
    other = load_model("curate-small")
    save_checkpoint(other.model, tmp_path / "small.pt")
    with pytest.raises(ModelError, match="small.pt"):
        load_model("curate-tiny", pretrained=str(tmp_path / "small.pt"))
    # what a file is, in one line: empty, not a checkpoint, weights that do not fit (their keys)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ModelError, match=r"checkpoint .*empty.pt is an empty file"):
        load_model("curate-tiny", pretrained=str(tmp_path / "empty.pt"))
    (tmp_path / "notes.pt").write_text("hello\n")  # a KeyError traceback from open_clip_train before
    with pytest.raises(ModelError, match=r"checkpoint .*notes.pt is not a PyTorch or safetensors file \(it starts "
                                         r"with b'hello\\n'\)"):
        load_model("curate-tiny", pretrained=str(tmp_path / "notes.pt"))
    sd = {k: v for k, v in load_model("curate-tiny").model.state_dict().items() if k != "logit_scale"}
    torch.save({**sd, "extra.weight": torch.zeros(1)}, tmp_path / "keys.pt")
    with pytest.raises(ModelError) as e:
        load_model("curate-tiny", pretrained=str(tmp_path / "keys.pt"))
    assert str(e.value).endswith("keys.pt: the checkpoint's weights do not fit this architecture (missing keys "
                                 "logit_scale; unexpected keys extra.weight)")


def test_pretrained_tag_ids_for_builtin_models():
    assert model_id_for("ViT-B-32", "laion2b_s34b_b79k") == "ViT-B-32__laion2b_s34b_b79k"
    assert "laion2b_s34b_b79k" in open_clip.list_pretrained_tags_by_model("ViT-B-32")


def test_a_local_dir_model_is_named_by_its_weights_not_its_path(tmp_path, monkeypatch):
    """open_clip loads a ``local-dir:`` folder's weights: the id hashes them (it said "random"
    and named the path, so new weights in the folder reused the old embeddings)."""
    import json

    def folder(where, seed):
        where.mkdir(parents=True)
        (where / "open_clip_config.json").write_text(json.dumps(
            {"model_cfg": open_clip.get_model_config("curate-tiny"), "preprocess_cfg": {}}))
        torch.save(load_model("curate-tiny", seed=seed).model.state_dict(), where / "open_clip_pytorch_model.bin")
        return where

    a = folder(tmp_path / "a" / "mymodel", 1)
    monkeypatch.chdir(tmp_path)
    ida = model_id_for("local-dir:a/mymodel", None)
    assert ida.startswith("local-dir-mymodel__open_clip_pytorch_model-") and "random" not in ida
    assert model_id_for(f"local-dir:{a}", None) == ida  # however the path is spelled
    assert load_model("local-dir:a/mymodel").model_id == ida
    torch.save(load_model("curate-tiny", seed=2).model.state_dict(), a / "open_clip_pytorch_model.bin")
    assert model_id_for("local-dir:a/mymodel", None) != ida


def test_an_embeddings_id_whose_checkpoint_now_holds_other_weights_is_refused(tmp_path, monkeypatch):
    from curate.manifest import RunManifest
    from curate.models.resolve import resolve_model
    from curate.tables import Dataset

    ckpt = save_checkpoint(load_model("curate-tiny", seed=1).model, tmp_path / "mut.pt")
    mid = model_id_for("curate-tiny", str(ckpt))
    ds = Dataset(tmp_path / "ds")
    ds.root.mkdir()
    RunManifest("embed", {"model": "curate-tiny", "pretrained": str(ckpt), "seed": 0}).write(ds, f"embed-{mid}")
    assert resolve_model(mid, dataset=ds).pretrained == str(ckpt)
    save_checkpoint(load_model("curate-tiny", seed=2).model, ckpt)  # other weights, same file
    with pytest.raises(ModelError, match=f"embeddings {mid} were made from {ckpt}, which now holds other weights"):
        resolve_model(mid, dataset=ds)


@pytest.fixture()
def hub_on_loopback(monkeypatch):
    """The Hub's endpoint on a loopback port: closed (``closed``) or listening (``open``)."""
    import socket

    for var in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "http_proxy", "HTTP_PROXY", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    open_port = listener.getsockname()[1]
    listener.listen(4)
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    closed_port = spare.getsockname()[1]
    spare.close()  # nothing listens there now: a connection is refused at once
    ports = {"open": open_port, "closed": closed_port}

    def point(which: str) -> None:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{ports[which]}")

    yield point
    listener.close()


def test_a_tag_whose_weights_cannot_be_fetched_is_one_line_before_any_download(tmp_path, hub_on_loopback,
                                                                                monkeypatch):
    """Without the weights in the cache and without the Hub, huggingface_hub retried each file
    for ~75 s with two dozen warnings before failing, in every task; one connection says it."""
    hub_on_loopback("closed")
    with pytest.raises(ModelError) as e:
        load_model("ViT-B-32", pretrained="openai", cache_dir=str(tmp_path))
    text = str(e.value)
    assert "\n" not in text and "ViT-B-32:openai" in text and str(tmp_path) in text
    assert "127.0.0.1" in text and "cannot be reached" in text and "--pretrained a checkpoint file" in text
    # hf-hub: names are checked the same way (their config comes from the Hub)
    with pytest.raises(ModelError, match="hf-hub:org/repo are not in the Hugging Face cache"):
        load_model("hf-hub:org/repo", cache_dir=str(tmp_path))
    # HF_HUB_OFFLINE: no connection is tried, and the error says why
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="not in the Hugging Face cache .* and HF_HUB_OFFLINE is set"):
        load_model("ViT-B-32", pretrained="openai", cache_dir=str(tmp_path))


def test_a_tag_is_checked_against_the_cache_then_the_hub(tmp_path, hub_on_loopback):
    from curate.models import check_model

    # cached (open_clip's .safetensors choice, in huggingface_hub's layout): no connection needed
    repo = tmp_path / "models--timm--vit_base_patch32_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("0" * 40) / "open_clip_model.safetensors").write_bytes(b"weights")
    hub_on_loopback("closed")
    check_model("ViT-B-32", "openai", cache_dir=str(tmp_path))
    with pytest.raises(ModelError, match="cannot be reached"):  # another tag's weights are not there
        check_model("ViT-B-32", "laion2b_s34b_b79k", cache_dir=str(tmp_path))
    # not cached, and the Hub answers: the download is left to open_clip
    hub_on_loopback("open")
    check_model("ViT-B-32", "laion2b_s34b_b79k", cache_dir=str(tmp_path))
