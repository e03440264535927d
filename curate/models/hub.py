"""Whether a pretrained tag's weights can be had, asked before anything waits for them.

open_clip fetches a tag's weights from the Hugging Face Hub on first use. On a machine that
cannot reach the Hub and has no copy in its cache, huggingface_hub retries each candidate
file with backoff: about 75 s and two dozen warning lines per process before the same
failure, in every task of a job. So a tag whose weights are not in the cache is checked with
one short connection to the Hub's host first, and a host that cannot be reached is one line
at once. A proxy in the environment is left to the download itself (the host is reached
through it), and ``HF_HUB_OFFLINE`` means no connection is tried at all.
"""

from __future__ import annotations

import os
import socket
import urllib.request
from urllib.parse import urlsplit

PROBE_SECONDS = 5.0  # one TCP connection; a reachable host answers in well under this
_TRUE = {"1", "ON", "YES", "TRUE"}


def _hub_files(name: str, tag: str | None) -> tuple[str, list[str]] | None:
    """(repo id, candidate file names) open_clip would fetch for ``name``/``tag``, or None when
    the weights do not come from the Hub (a checkpoint file, no tag, no hub entry)."""
    import open_clip

    if name.startswith("hf-hub:"):  # the repo's config names the weights; the config comes first
        return name[len("hf-hub:"):], ["open_clip_config.json"]
    if tag is None:
        return None
    hub = open_clip.get_pretrained_cfg(name, tag).get("hf_hub", "")
    if not hub:
        return None
    repo, filename = os.path.split(hub)
    filename = filename or "open_clip_pytorch_model.bin"
    # open_clip tries its .safetensors alternatives first: by its own rule, where it has one
    alternatives = getattr(open_clip.pretrained, "_get_safe_alternatives", None)
    return repo, [*(alternatives(filename) if alternatives else ()), filename]


def cached(repo: str, names: list[str], cache_dir: str | None = None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo, n, cache_dir=cache_dir), str) for n in names)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE


def _endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def _through_proxy(host: str) -> bool:
    proxies = urllib.request.getproxies()
    return bool(proxies.get("https") or proxies.get("all")) and not urllib.request.proxy_bypass(host)


def unreachable_reason(name: str, tag: str | None, cache_dir: str | None = None) -> str | None:
    """Why ``name``'s weights for ``tag`` cannot be had here, or None when they are cached,
    come from no hub, or the hub's host answers."""
    files = _hub_files(name, tag)
    if files is None or cached(*files, cache_dir=cache_dir):
        return None
    from huggingface_hub import constants

    where = cache_dir or constants.HF_HUB_CACHE
    what = f"{name}" + (f":{tag}" if tag else "")
    if _offline():
        return f"the weights of {what} are not in the Hugging Face cache ({where}) and HF_HUB_OFFLINE is set"
    url = urlsplit(_endpoint())
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    if not host or _through_proxy(host):
        return None
    try:
        socket.create_connection((host, port), timeout=PROBE_SECONDS).close()
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        return (f"the weights of {what} are not in the Hugging Face cache ({where}) and {host}:{port} cannot be "
                f"reached ({reason}): download them into that cache where the Hub can be reached, or give "
                "--pretrained a checkpoint file")
    return None
