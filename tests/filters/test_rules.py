"""Filter semantics on crafted edge cases, against DataComp's expressions."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.engine import LocalExecutor
from curate.filters import langid, stages
from curate.filters.stages import FilterSpecError, parse_filter
from curate.filters.text_stats import text_stats
from curate.filters.threshold import reference_threshold, top_fraction_threshold


@pytest.fixture(scope="module")
def model():
    return langid.load_model()


def joined(model, texts, widths=None, heights=None, scores=None, embeddings=None) -> pa.Table:
    """The columns a filter sees: samples + text_stats (+ s0 / e0 from an embeddings table)."""
    n = len(texts)
    uids = pa.array([f"{i:032x}" for i in range(n)])
    t = text_stats(uids, pa.array(texts, pa.string()), model)
    t = t.append_column("text", pa.array(texts, pa.string()))
    t = t.append_column("original_width", pa.array(widths or [640] * n, pa.int32()))
    t = t.append_column("original_height", pa.array(heights or [480] * n, pa.int32()))
    if scores is not None:
        t = t.append_column("s0", pa.array(scores, pa.float32()))
    if embeddings is not None:
        t = t.append_column("e0", stages.embeddings_to_binary(pa.FixedSizeListArray.from_arrays(
            pa.array(np.asarray(embeddings, np.float16).ravel()), np.asarray(embeddings).shape[1])))
    return t


def decide(name, t, ctx=None, **params):
    spec = parse_filter(name + (":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else ""))
    return stages.DECIDE[spec.name](t, spec.params, ctx or {})


EN = "a brown dog playing with a ball in the garden"


def test_basic_size_edges(model):
    #            exact 200  199       aspect 3.0  aspect 3.005  missing   zero     0x0
    widths = [200, 199, 600, 601, None, 0, 0, 200]
    heights = [300, 300, 200, 200, 400, 400, 0, 200]
    d = decide("basic", joined(model, [EN] * 8, widths, heights))
    assert list(d.reason) == ["kept", "image_too_small", "kept", "bad_aspect_ratio", "missing_size",
                              "image_too_small", "image_too_small", "kept"]
    assert d.value[1] == 199 and d.detail[1] == "199x300"
    assert d.value[3] == pytest.approx(601 / 200)
    assert d.detail[4] == "?x400"


def test_basic_caption_edges(model):
    texts = ["", "two words", "a b c", "a b cd", "  a   b  c  ", "un chien noir court vite",
             "a black dog\nrunning on the beach", "a big dog"]
    t = joined(model, texts)
    # lid.176 labels even the empty caption 'en' (it reads the end-of-line token).
    assert t.column("language").to_pylist() == ["en"] * 5 + ["fr", "en", "en"]
    d = decide("basic", t)
    assert list(d.reason) == [
        "too_few_words",  # empty: 0 words (and 0 chars; the first failing rule is reported)
        "too_few_words",  # 2 words, not more than 2
        "too_few_chars",  # 3 words but 5 characters, not more than 5
        "kept",  # 6 characters
        "kept",  # 3 words, 12 characters (spaces count, as len() counts them)
        "not_english",
        "kept",  # the newline is a space for fastText and for str.split
        "kept"]
    assert d.detail[5] == "fr" and d.value[1] == 2 and d.value[2] == 5
    assert d.rules["too_few_chars"] == 2  # the empty caption fails it too


def test_basic_thresholds_are_options(model):
    t = joined(model, [EN, EN], [150, 900], [150, 200])
    assert list(decide("basic", t).reason) == ["image_too_small", "bad_aspect_ratio"]
    assert list(decide("basic", t, min_side=100, max_aspect=5).reason) == ["kept", "kept"]
    assert list(decide("basic", t, min_words=50).reason) == ["too_few_words"] * 2
    assert list(decide("basic", t, lang="de", min_side=100, max_aspect=5).reason) == ["not_de"] * 2


def datacomp_basic(model, texts, widths, heights) -> np.ndarray:
    """DataComp's load_uids_with_basic_filter_helper, one row at a time (its expressions)."""
    keep = []
    for text, w, h in zip(texts, widths, heights):
        lang = model.predict(text.replace("\n", " "))[0][0].split("__label__")[1]
        w = math.nan if w is None else float(w)
        h = math.nan if h is None else float(h)
        lo, hi = min(w, h) if not (math.isnan(w) or math.isnan(h)) else math.nan, max(w, h)
        with np.errstate(divide="ignore", invalid="ignore"):
            aspect = np.float64(hi) / np.float64(lo)
        keep.append(lang == "en" and len(text.split()) > 2 and len(text) > 5 and lo >= 200 and aspect <= 3.0)
    return np.array(keep)


def test_basic_equals_datacomp_on_real_alttext(model, shared_data):
    texts = pq.read_table(shared_data / "alttext" / "web_alttext_10k.parquet", columns=["TEXT"]).column(0)
    texts = texts.slice(0, 2000).to_pylist()
    rng = np.random.default_rng(0)
    widths = [None if r < 0.03 else int(x) for r, x in zip(rng.random(2000), rng.choice([0, 150, 200, 256, 600, 601, 1024], 2000))]
    heights = [int(x) for x in rng.choice([0, 199, 200, 300, 800], 2000)]
    texts = [t + ("\nsecond line" if i % 17 == 0 else "") for i, t in enumerate(texts)]
    d = decide("basic", joined(model, texts, widths, heights))
    ref = datacomp_basic(model, texts, widths, heights)
    assert np.array_equal(d.kept, ref)
    assert 0 < ref.sum() < len(ref)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([0.1, 0.2, 0.2, 0.25, 0.3, 0.3, 0.3, -0.0, 0.0, math.nan, -1.0]), min_size=1, max_size=40),
       st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 0.75, 0.99]))
def test_fraction_threshold_is_datacomp_exact(tmp_path_factory, scores, fraction):
    d = tmp_path_factory.mktemp("scores")
    paths = []
    for j, part in enumerate(np.array_split(np.asarray(scores, np.float32), 3)):
        p = d / f"part-{j}.parquet"
        pq.write_table(pa.table({"clip_score": pa.array(part, pa.float32())}), p)
        paths.append(str(p))
    got = top_fraction_threshold(paths, "clip_score", fraction, LocalExecutor())["threshold"]
    ref = reference_threshold(np.asarray(scores, np.float32), fraction)
    assert (math.isnan(got) and math.isnan(ref)) or got == ref


def test_fraction_one_keeps_everything(tmp_path):
    p = tmp_path / "s.parquet"
    pq.write_table(pa.table({"clip_score": pa.array([0.1, 0.2], pa.float32())}), p)
    r = top_fraction_threshold([str(p)], "clip_score", 1.0, LocalExecutor())
    assert r["threshold"] == -math.inf and r["index"] == 2


def test_clip_score_ties_at_the_cut_are_kept(model):
    scores = [0.35, 0.30, 0.30, 0.30, 0.25, 0.20, 0.10, 0.05, None, 0.30]
    t = joined(model, [EN] * len(scores), scores=scores)
    known = np.array([s for s in scores if s is not None], np.float32)
    thr = reference_threshold(known, 0.3)  # int(9 * 0.3) = 2 -> 0.30
    assert thr == np.float32(0.30)
    d = decide("clip_score", t, {"score_column": "s0", "threshold": thr}, fraction=0.3)
    # 1 above the cut + 4 tied at it: 5 kept, more than 30% of 9, as in DataComp.
    assert list(d.reason) == ["kept"] * 4 + ["low_clip_score"] * 4 + ["no_embedding", "kept"]
    assert d.value[4] == pytest.approx(0.25) and math.isnan(d.value[8])


@pytest.mark.parametrize("lang_id", ["gcld3", "fasttext"])
def test_laion2b(model, lang_id):
    t = joined(model, [EN, EN, "un chien noir qui court dans le jardin", EN], scores=[0.28, 0.2799, 0.5, None])
    d = decide("laion2b", t, {"score_column": "s0"}, lang_id=lang_id)
    assert list(d.reason) == ["kept", "low_clip_score", "not_english", "no_embedding"]
    assert d.detail[2] == "fr"


def test_laion2b_equals_datacomp_gcld3(model, shared_data):
    import gcld3

    texts = pq.read_table(shared_data / "alttext" / "web_alttext_10k.parquet", columns=["TEXT"]).column(0)
    texts = texts.slice(0, 1500).to_pylist()
    scores = np.random.default_rng(0).uniform(0.2, 0.35, len(texts)).astype(np.float32)
    d = decide("laion2b", joined(model, texts, scores=scores.tolist()), {"score_column": "s0"})
    # DataComp's load_uids_with_clip_score_helper with gcld3_en_filter=True, row by row.
    det = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)
    ref = np.array([det.FindLanguage(text=t.replace("\n", " ")).language == "en" and s >= 0.28
                    for t, s in zip(texts, scores)])
    assert np.array_equal(d.kept, ref) and 0 < ref.sum() < len(ref)


def test_text_based_first_synset(model, tmp_path):
    from curate.wordnet import get_wordnet

    wn = get_wordnet()
    dog = wn.synsets("dog")[0]
    (tmp_path / "targets.txt").write_text(f"# target synsets\nn{dog.offset():08d}\n")
    offsets = stages.read_synset_offsets(str(tmp_path / "targets.txt"))
    assert offsets == [dog.offset()]
    texts = ["a happy dog in the garden",  # dog.n.01: kept
             "two dogs on a sofa",  # morphy: dogs -> dog
             "a hot dog with mustard on a plate",  # "dog" still matches (first synset of the word)
             "a photo of a cat on the sofa",  # no target
             "ein Hund und ein dog im Garten",  # not English
             "Dog, running on grass"]  # "Dog," keeps its comma in str.split: no match
    d = decide("text_based", joined(model, texts), {"target_offsets": offsets},
               synsets=str(tmp_path / "targets.txt"))
    reasons = list(d.reason)
    assert reasons[:4] == ["kept", "kept", "kept", "no_target_synset"]
    assert reasons[4] == "not_english" or reasons[4] == "kept"
    assert reasons[5] == "no_target_synset"
    assert d.detail[1] == "dogs" and d.value[0] == dog.offset()


def test_text_based_synset_names(tmp_path):
    from curate.wordnet import get_wordnet

    (tmp_path / "t.txt").write_text("dog.n.01\n2084071\n")
    assert stages.read_synset_offsets(str(tmp_path / "t.txt")) == [get_wordnet().synset("dog.n.01").offset()]
    (tmp_path / "bad.txt").write_text("n02084071\nnot a synset\n")
    with pytest.raises(Exception, match="line 2"):
        stages.read_synset_offsets(str(tmp_path / "bad.txt"))


def test_image_based_assignment(model, tmp_path):
    # Two well separated clusters; the target images sit in cluster 0 only.
    centroids = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], np.float32)
    path = tmp_path / "c.npy"
    np.save(path, centroids)
    emb = [[0.9, 0.1, 0, 0], [0.1, 0.9, 0, 0], [0.8, 0.2, 0, 0], [0.7, 0.1, 0, 0]]
    texts = [EN, EN, "ok", "un chien noir qui court dans le jardin"]
    t = joined(model, texts, embeddings=emb, scores=[0.3, 0.3, 0.3, 0.3])
    ctx = {"embedding_column": "e0", "centroids_path": str(path), "centroids_sha256": "c", "target_clusters": [0]}
    d = decide("image_based", t, ctx, target="x.npy")
    assert list(d.reason) == ["kept", "cluster_without_target", "too_few_tokens", "not_english"]
    assert d.value[0] == 0 and d.value[1] == 1
    # Without embedding: no_embedding first.
    t2 = t.set_column(t.column_names.index("e0"), "e0", pa.nulls(4, pa.binary()))
    assert set(decide("image_based", t2, ctx, target="x.npy").reason) == {"no_embedding"}


def test_image_based_is_dot_product_not_l2():
    # A long vector nearer (L2) to c1 but with a larger dot product with c0: DataComp picks c0.
    c = np.array([[3.0, 0.0], [0.0, 0.5]], np.float32)
    x = np.array([[0.6, 0.5]], np.float32)
    assert stages.assign_clusters(x, c)[0] == 0
    assert np.linalg.norm(x - c[1]) < np.linalg.norm(x - c[0])


@pytest.mark.parametrize("text,match", [
    ("nope", "unknown filter"), ("basic:min_side", "key=value"), ("basic:size=3", "no parameter"),
    ("clip_score", "exactly one"), ("clip_score:fraction=1.5", r"\[0, 1\]"), ("image_based:k=5", "target"),
    ("text_based", "synsets"), ("basic:min_side=abc", "bad value"),
    # a CLIP score is a cosine: 28 (a score x 100, as some tools print it) kept nothing, in silence
    ("clip_score:threshold=28", r"threshold: must be in \[-1, 1\]"), ("laion2b:threshold=30", r"\[-1, 1\]"),
    ("image_based:target=t.npy,clip_threshold=-2", r"clip_threshold: must be in \[-1, 1\]")])
def test_bad_specs(text, match):
    with pytest.raises(FilterSpecError, match=match):
        parse_filter(text)


def test_spec_defaults_are_datacomp():
    p = parse_filter("basic").params
    assert (p["lang"], p["min_words"], p["min_chars"], p["min_side"], p["max_aspect"]) == ("en", 3, 6, 200, 3.0)
    assert parse_filter("laion2b").params["threshold"] == 0.28
    ib = parse_filter("image_based:target=t.npy").params
    assert (ib["k"], ib["niter"], ib["seed"], ib["min_tokens"], ib["min_chars"]) == (100_000, 20, 0, 2, 6)
    assert str(parse_filter("clip_score:fraction=0.3")) == "clip_score:fraction=0.3"
