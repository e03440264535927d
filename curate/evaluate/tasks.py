"""Evaluation tasks: zero-shot classification on a labelled image folder, image-text
retrieval on an image-caption set, and ``evaluate`` that runs them for one checkpoint and
writes the results beside it."""

from __future__ import annotations

import csv
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curate.errors import CurateError
from curate.evaluate.metrics import class_embeddings, retrieval_metrics, zero_shot_metrics
from curate.manifest import code_version
from curate.tables import atomic_write_bytes

# A short, generic set (CLIP's paper found a few photo-style prompts carry most of the gain).
DEFAULT_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of the {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "an image of a {}.",
)


class EvalError(CurateError):
    """An evaluation set or checkpoint cannot be used."""


def load_templates(spec: str | os.PathLike | list | tuple | None) -> list[str]:
    """``None``/"default": DEFAULT_TEMPLATES; "openai": open_clip's 80 ImageNet prompts;
    "simple": its 7; a list; or a text file with one ``{}`` template per line."""
    if spec is None or spec == "default":
        return list(DEFAULT_TEMPLATES)
    if isinstance(spec, (list, tuple)):
        templates = [str(t) for t in spec]
    elif spec in ("openai", "simple"):
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

        fns = OPENAI_IMAGENET_TEMPLATES if spec == "openai" else SIMPLE_IMAGENET_TEMPLATES
        templates = [f("{}") for f in fns]
    else:
        from curate import storage

        if not storage.is_file(spec):  # a local file or an object on a store
            raise EvalError(f"templates: {spec} is neither default/openai/simple nor a file")
        text = storage.read_bytes(spec).decode("utf-8")
        templates = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    bad = [t for t in templates if "{}" not in t and "{c}" not in t]
    if bad or not templates:
        raise EvalError(f"every template needs a {{}} placeholder for the class name; bad: {bad[:1] or 'none given'}")
    return [t.replace("{c}", "{}") for t in templates]


def _folder_images(folder: Path, max_per_class: int | None) -> tuple[list[str], list[str]]:
    from curate.embed.core import list_image_folder

    paths, labels = list_image_folder(folder)
    if max_per_class:
        kept, seen = [], {}
        for p, lab in zip(paths, labels):
            if seen.get(lab, 0) < max_per_class:
                seen[lab] = seen.get(lab, 0) + 1
                kept.append((p, lab))
        paths, labels = [p for p, _ in kept], [lab for _, lab in kept]
    return paths, labels


@dataclass
class ZeroShotSet:
    """A zero-shot folder read and checked, nothing embedded: its images, each one's class index,
    the class prompt names and the templates."""

    folder: Path
    paths: list[str]
    labels: list[int]
    names: list[str]
    templates: list[str]
    max_per_class: int | None


def zero_shot_set(folder: str | os.PathLike, templates=None, classnames: dict[str, str] | None = None,
                  max_per_class: int | None = None) -> ZeroShotSet:
    """``folder/<class>/*.jpg`` listed and checked (every class folder holds an image, at least two
    classes; templates usable). Class names are the folder names with ``_`` as spaces, unless
    ``classnames`` maps a folder name to a prompt name."""
    folder = Path(folder)
    paths, labels = _folder_images(folder, max_per_class)
    folders = sorted(set(labels) - {""})
    empty = sorted(d.name for d in folder.iterdir() if d.is_dir() and d.name not in folders) if folder.is_dir() else []
    if empty:  # a class left out would change the task (its chance, its classes) in silence
        raise EvalError(f"{folder}: class folder {empty[0]!r} holds no image ({len(empty)} such); remove it or add "
                        f"its images")
    if len(folders) < 2:
        raise EvalError(f"{folder}: zero-shot needs at least 2 class sub-folders, found {len(folders)}")
    keep = [i for i, lab in enumerate(labels) if lab]
    return ZeroShotSet(folder, [paths[i] for i in keep], [folders.index(labels[i]) for i in keep],
                       [(classnames or {}).get(f, f.replace("_", " ")) for f in folders], load_templates(templates),
                       max_per_class)


def zero_shot(bundle, folder: str | os.PathLike | ZeroShotSet, templates=None, classnames: dict[str, str] | None = None,
              max_per_class: int | None = None, batch_size: int = 256) -> dict:
    """Zero-shot classification of ``folder/<class>/*.jpg`` (or a ``ZeroShotSet`` read before):
    top-1, top-5, mean per-class recall."""
    from curate.embed.core import embed_images, embed_texts

    zs = folder if isinstance(folder, ZeroShotSet) else zero_shot_set(folder, templates, classnames, max_per_class)
    prompts = [t.format(n) for n in zs.names for t in zs.templates]
    class_emb = class_embeddings(embed_texts(bundle, prompts), len(zs.names), len(zs.templates))
    img = embed_images(bundle, zs.paths, batch_size=batch_size)
    out = zero_shot_metrics(img, np.array(zs.labels), class_emb, zs.names)
    out.update(task="zeroshot", dataset=str(zs.folder), templates=len(zs.templates), max_per_class=zs.max_per_class)
    return out


def read_captions(path: str | os.PathLike) -> tuple[Path, list[tuple[str, str]]]:
    """(images folder, [(image file, caption)]) from ``captions.csv`` (header ``image,caption``)
    or a folder holding ``captions.csv`` and ``images/``."""
    p = Path(path)
    csv_path = p / "captions.csv" if p.is_dir() else p
    if not csv_path.is_file():
        raise EvalError(f"retrieval set {path}: no captions.csv")
    images_dir = csv_path.parent / "images" if (csv_path.parent / "images").is_dir() else csv_path.parent
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        if "image" not in cols or "caption" not in cols:
            raise EvalError(f"{csv_path}: needs columns image,caption (has {','.join(cols)})")
        rows = []
        for line, r in enumerate(reader, start=2):
            if not r["image"] or r["caption"] is None:
                raise EvalError(f"{csv_path}: row {line}: empty image or caption")
            rows.append((r["image"], r["caption"]))
    return images_dir, rows


@dataclass
class RetrievalSet:
    """A retrieval set read and checked, nothing embedded: its images in order, and each caption
    with its image's index."""

    captions_path: str
    images: list[str]
    captions: list[str]
    image_of_caption: list[int]


def retrieval_set(captions: str | os.PathLike, images: list[str] | None = None) -> RetrievalSet:
    """An image-caption set (e.g. Flickr8k: images/ + captions.csv) read and checked: at least two
    images, each on disk; ``images`` restricts it to those image files (a held-out split)."""
    images_dir, rows = read_captions(captions)
    if images is not None:
        wanted = set(images)
        unknown = sorted(wanted - {im for im, _ in rows})
        if unknown:  # a typo in the split would evaluate a smaller set under the same name, in silence
            raise EvalError(f"retrieval set {captions}: {len(unknown)} image(s) of the --images split are not in it "
                            f"(the first: {unknown[0]!r})")
        rows = [r for r in rows if r[0] in wanted]
    order = sorted({im for im, _ in rows})
    if len(order) < 2:
        raise EvalError(f"retrieval set {captions}: needs at least 2 images, found {len(order)}")
    missing = [im for im in order if not (images_dir / im).is_file()]
    if missing:
        raise EvalError(f"retrieval set {captions}: image {images_dir / missing[0]} not found "
                        f"({len(missing)} missing)")
    index = {im: i for i, im in enumerate(order)}
    return RetrievalSet(str(captions), [str(images_dir / im) for im in order], [c for _, c in rows],
                        [index[im] for im, _ in rows])


def retrieval(bundle, captions: str | os.PathLike | RetrievalSet, images: list[str] | None = None,
              batch_size: int = 256, ks: tuple[int, ...] = (1, 5, 10)) -> dict:
    """Image-text retrieval recall@k on an image-caption set (or a ``RetrievalSet`` read before)."""
    from curate.embed.core import embed_images, embed_texts

    rs = captions if isinstance(captions, RetrievalSet) else retrieval_set(captions, images)
    img = embed_images(bundle, rs.images, batch_size=batch_size)
    txt = embed_texts(bundle, rs.captions)
    out = retrieval_metrics(img, txt, np.array(rs.image_of_caption), ks=ks)
    out.update(task="retrieval", dataset=rs.captions_path)
    return out


def _zeroshot_key(folder) -> str:
    """A zero-shot set's name in the results: its folder's."""
    return Path(folder).name


def _retrieval_key(captions) -> str:
    """A retrieval set's name in the results: its folder's (a captions file: the folder holding it)."""
    return Path(captions).name if Path(captions).is_dir() else Path(captions).parent.name


def _train_block(info: dict | None, ck: Path | None) -> dict | None:
    """What the evaluated model was trained on, from its run's train.json. An intermediate
    checkpoint (``checkpoints/epoch_K.pt`` of a run of E) saw K/E of the run's samples: it
    records its own count and epoch, not the whole run's budget."""
    if not info:
        return None
    out = {k: info.get(k) for k in ("preset", "seed", "samples_seen", "data")}
    m = re.fullmatch(r"epoch_(\d+)\.pt", ck.name) if ck is not None else None
    epochs = info.get("epochs")
    if m and isinstance(epochs, int) and 0 < int(m.group(1)) < epochs and isinstance(info.get("samples_seen"), int):
        k = int(m.group(1))
        out.update(samples_seen=info["samples_seen"] * k // epochs, checkpoint_epoch=k, epochs=epochs,
                   run_samples_seen=info["samples_seen"])
    return out


def _find_train_info(checkpoint: Path) -> dict | None:
    for d in (checkpoint.parent, checkpoint.parent.parent):
        p = d / "train.json"
        if p.exists():
            return json.loads(p.read_text())
    return None


def results_path(checkpoint: str | os.PathLike) -> Path:
    """Where ``evaluate`` writes a checkpoint's results: ``<stem>.eval.json`` beside it."""
    c = Path(checkpoint)
    return c.with_name(f"{c.stem}.eval.json")


def _checkpoint(checkpoint: str | os.PathLike | None, model: str | None) -> tuple[Path | None, dict | None, str]:
    """The checkpoint file (a `curate train` run folder: its model.pt), its run's train.json and
    the architecture: ``model``, else train.json's, else the one the checkpoint records."""
    ck = Path(checkpoint).resolve() if checkpoint is not None else None
    if ck is not None and ck.is_dir() and (ck / "model.pt").is_file():
        ck = ck / "model.pt"  # a `curate train` run folder
    if ck is not None and ck.is_dir():  # a run folder whose training did not finish, or another folder
        raise EvalError(f"{checkpoint} is a folder without model.pt: a `curate train` run that has not finished, or "
                        f"not a run folder; give a checkpoint file (e.g. its checkpoints/epoch_N.pt)")
    if ck is not None and not ck.is_file():
        raise EvalError(f"checkpoint {checkpoint} does not exist")
    info = _find_train_info(ck) if ck is not None else None
    arch = model or (info or {}).get("model")
    if arch is None and ck is not None:
        import pickle

        import torch

        from curate.models.factory import load_error_text

        try:
            saved = torch.load(ck, map_location="cpu", weights_only=True)
        except (RuntimeError, KeyError, OSError, EOFError, ValueError, pickle.UnpicklingError) as e:  # empty, text
            why = load_error_text(e) if isinstance(e, EOFError) else f"not a PyTorch checkpoint ({type(e).__name__})"
            raise EvalError(f"cannot load checkpoint {checkpoint}: {why}") from None
        arch = saved.get("arch") if isinstance(saved, dict) else None
    if arch is None:
        raise EvalError(f"{checkpoint}: no train.json beside it; pass the model architecture (--model)")
    return ck, info, arch


def _summary(results: dict) -> dict:
    """The headline numbers: top-1 and mean per-class recall per zero-shot set, recalls per retrieval set."""
    summary = {}
    for k, v in results["zeroshot"].items():
        summary[f"{k}/top1"] = v["top1"]
        summary[f"{k}/mean_per_class_recall"] = v["mean_per_class_recall"]
    for k, v in results["retrieval"].items():
        summary[f"{k}/mean_recall"] = v["mean_recall"]
        summary[f"{k}/image_to_text_R@1"] = v["image_to_text_R@1"]
        summary[f"{k}/text_to_image_R@1"] = v["text_to_image_R@1"]
    return summary


def _write_results(out: dict, output, ck: Path | None, checkpoint_uri: str | None) -> str:
    """Write the results JSON (``output``, else beside the checkpoint or its URI); returns where."""
    from curate import outputs, storage

    if output is None and checkpoint_uri:
        from curate.evaluate.remote import results_uri

        output = results_uri(checkpoint_uri)
    path = (str(output) if storage.is_uri(output) else Path(output)) if output is not None else results_path(ck)
    data = (json.dumps(out, indent=2, sort_keys=True, default=str) + "\n").encode()
    if isinstance(path, str):  # a URI: one whole object (curate.outputs)
        outputs.write_bytes(path, data)
    else:
        atomic_write_bytes(path, data)
    return str(path)


def evaluate(checkpoint: str | os.PathLike | None, model: str | None = None, *,
             zeroshot: list | tuple = (), retrieval_sets: list | tuple = (), templates=None,
             max_per_class: int | None = None, retrieval_images: list[str] | None = None,
             output: str | os.PathLike | None = None, device: str = "auto", batch_size: int = 256,
             seed: int = 0, pretrained: str | None = None, sources: dict[str, str] | None = None,
             checkpoint_uri: str | None = None) -> dict:
    """Evaluate one checkpoint on zero-shot folders and retrieval sets; writes and returns the results.
    ``sources``: the name to record for a set read from a local copy (its URI); ``checkpoint_uri``:
    the store's checkpoint of which ``checkpoint`` is the local copy (``curate.evaluate.remote``):
    recorded, and the results go beside it.

    ``model`` defaults to the architecture recorded in the run's ``train.json``. ``checkpoint``
    None evaluates random weights from ``seed`` (the chance baseline; ``output`` is then needed),
    or the open_clip ``pretrained`` tag when one is given.
    Results go to ``<checkpoint stem>.eval.json`` beside the checkpoint and are linked from
    the trained subset's manifest.
    """
    from curate.models import load_model

    if not zeroshot and not retrieval_sets:
        raise EvalError("nothing to evaluate: give at least one zero-shot folder or retrieval set")
    for kind, sets, key_of in (("zero-shot", zeroshot, _zeroshot_key), ("retrieval", retrieval_sets, _retrieval_key)):
        keys = [key_of(x) for x in sets]
        twice = next((k for k in keys if keys.count(k) > 1), None)
        if twice is not None:  # results are keyed by that name: the second replaced the first in silence
            both = ", ".join(str(x) for x in sets if key_of(x) == twice)
            raise EvalError(f"two {kind} sets are both named {twice!r} ({both}); results are keyed by the "
                            f"folder's name: give one another name")
    ck, info, arch = _checkpoint(checkpoint, model)
    if output is None and ck is None:
        raise EvalError("evaluating random weights needs an output path")
    if output is not None:
        from curate.names import check_file_output

        check_file_output(output, "--output", "results.eval.json")
    # every set is listed and checked before the model loads and the first set is embedded: a
    # typo in the last one is one line at once, not after minutes of evaluating the others
    zs_sets = {_zeroshot_key(f): zero_shot_set(f, templates, max_per_class=max_per_class) for f in zeroshot}
    rt_sets = {_retrieval_key(c): retrieval_set(c, retrieval_images) for c in retrieval_sets}
    t0 = time.perf_counter()
    bundle = load_model(arch, pretrained=str(ck) if ck else pretrained, device=device, seed=seed)
    results: dict = {"zeroshot": {}, "retrieval": {}}
    for key, zs in zs_sets.items():
        results["zeroshot"][key] = zero_shot(bundle, zs, batch_size=batch_size)
    for key, rs in rt_sets.items():
        results["retrieval"][key] = retrieval(bundle, rs, batch_size=batch_size)
    for group in results.values():
        for v in group.values():
            v["dataset"] = (sources or {}).get(v["dataset"], v["dataset"])
    summary = _summary(results)
    out = {
        "checkpoint": checkpoint_uri or (str(ck) if ck else None),
        "model": arch,
        "model_id": bundle.model_id,
        "train": _train_block(info, ck),
        "summary": summary,
        **results,
        "wall_s": round(time.perf_counter() - t0, 2),
        "code": code_version(),
    }
    out["results_path"] = _write_results(out, output, ck, checkpoint_uri)
    if info and not (out["train"] or {}).get("checkpoint_epoch"):  # a run's model, not one of its way points
        from curate.train.runner import link_to_subset

        link_to_subset(info, "evaluations", {"results": out["results_path"], "checkpoint": out["checkpoint"],
                                              "seed": info.get("seed"), "summary": summary},
                        replace_on="results")
    return out
