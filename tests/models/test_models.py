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


def test_pretrained_tag_ids_for_builtin_models():
    assert model_id_for("ViT-B-32", "laion2b_s34b_b79k") == "ViT-B-32__laion2b_s34b_b79k"
    assert "laion2b_s34b_b79k" in open_clip.list_pretrained_tags_by_model("ViT-B-32")
