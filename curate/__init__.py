"""curate: turn raw web image-text pools into curated CLIP training sets."""

import os as _os

# albumentations (which img2dataset imports) asks PyPI for a newer version at import unless
# told not to: no network call may leave a curate process but the ones a job makes
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
