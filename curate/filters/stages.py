"""The filters: parameters and per-batch decisions.

Every filter is a function ``decide(batch, params, ctx) -> Decision`` over one Arrow table of
joined columns (samples + text_stats + the embeddings it needs). It assigns each row 'kept' or
the first failing rule as its reason (rules are checked in the order listed), the number that
decided, and a text detail. Pool-wide facts (a fraction threshold, k-means centroids, a synset
list) are computed once by the job and arrive in ``ctx``.

DataComp's rules, reproduced exactly (mlfoundations/datacomp, baselines/apply_filter.py):
- basic: fastText top-1 label == en; len(text.split()) > 2; len(text) > 5;
  min(w, h) >= 200 and max(w, h) / min(w, h) <= 3.0 (float division; missing size fails).
- clip_score: score >= threshold; fraction f: threshold = descending-sorted scores[int(N f)].
- laion2b: score >= 0.28 and gcld3 (min 0, max 1000 bytes) says English.
- image_based: caption filter (en, > 1 fastText token, > 5 chars), then the sample's nearest
  centroid by largest dot product must have received at least one target image.
- text_based: English, and some word of text.split() has a first WordNet synset
  (``wordnet.synsets(word)[0]``) whose offset is in the target list.

The decisions themselves are ``curate.filters.decide`` (re-exported here); this module is the
filters' parameters (``--filter name:k=v``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from curate.errors import CurateError
from curate.filters.decide import (DECIDE, KEPT, Decision, assign_clusters, caption_rules,  # noqa: F401 - re-exported
                                   decide_basic, decide_clip_score, decide_image_based, decide_laion2b,
                                   decide_text_based, embeddings_from_binary, embeddings_to_binary,
                                   read_synset_offsets)
from curate.params.filters import FILTERS


class FilterSpecError(CurateError):
    """A --filter argument names an unknown filter or parameter, or a bad value."""


# ---------------------------------------------------------------- specs
# Each filter's parameters are a model in curate/params/filters.py (the recipe stages take the
# same models); ``name:key=value,...`` is a thin front end over them.

@dataclass(frozen=True)
class FilterSpec:
    name: str
    params: dict = field(default_factory=dict)

    def __str__(self) -> str:
        fields = FILTERS[self.name].model_fields
        given = {k: v for k, v in self.params.items() if v != fields[k].default}
        return self.name + (":" + ",".join(f"{k}={v}" for k, v in sorted(given.items())) if given else "")

    @property
    def model(self) -> str | None:
        return self.params.get("model")


def filter_spec(name: str, given: dict, text: str) -> FilterSpec:
    """The spec of filter ``name`` with ``given`` values (text or typed) checked by its model;
    a bad one is a ``FilterSpecError`` naming ``text``."""
    from pydantic import ValidationError

    from curate.params import describe_validation

    model = FILTERS[name]
    try:
        params = model.model_validate(given)
    except ValidationError as e:
        raise FilterSpecError(f"--filter {text!r}: "
                              f"{describe_validation(model, e, lambda key: f'bad value for {key}:')}") from None
    return FilterSpec(name, params.model_dump())


def parse_filter(text: str) -> FilterSpec:
    """``name`` or ``name:key=value,key=value`` -> FilterSpec with every parameter resolved."""
    name, _, rest = text.partition(":")
    name = name.strip()
    if name not in FILTERS:
        raise FilterSpecError(f"unknown filter {name!r} in --filter {text!r}; known: {', '.join(FILTERS)}")
    fields = FILTERS[name].model_fields
    given: dict[str, str] = {}
    for item in filter(None, (x.strip() for x in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise FilterSpecError(f"--filter {text!r}: expected key=value, got {item!r}")
        if key not in fields:
            raise FilterSpecError(f"--filter {text!r}: {name} has no parameter {key!r}; "
                                  f"parameters: {', '.join(fields)}")
        if key in given:  # the last would win in silence
            raise FilterSpecError(f"--filter {text!r}: {key} is given twice")
        given[key] = value.strip()
    return filter_spec(name, given, text)


def describe_filters() -> str:
    lines = []
    for name, model in FILTERS.items():
        lines.append(f"{name}: " + "; ".join(f"{k}={f.default} ({f.description})" for k, f in model.model_fields.items()))
    return "\n".join(lines)
