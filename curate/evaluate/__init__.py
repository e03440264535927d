"""Evaluation of trained checkpoints: zero-shot classification (top-1, mean per-class recall)
and image-text retrieval (recall@1/5/10). See docs/evaluate.md."""

from curate.evaluate.metrics import class_embeddings, retrieval_metrics, zero_shot_metrics
from curate.evaluate.tasks import (
    DEFAULT_TEMPLATES,
    EvalError,
    evaluate,
    load_templates,
    read_captions,
    results_path,
    retrieval,
    zero_shot,
)

__all__ = [
    "DEFAULT_TEMPLATES", "EvalError", "class_embeddings", "evaluate", "load_templates", "read_captions",
    "results_path", "retrieval", "retrieval_metrics", "zero_shot", "zero_shot_metrics",
]
