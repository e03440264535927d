"""curate: turn raw web image-text pools into curated CLIP training sets."""

__version__ = "0.1.0"
