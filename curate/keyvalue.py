"""``KEY=VALUE`` command-line items (``--conf``, ``--storage-option``) parsed one way."""

from __future__ import annotations


def parse_key_values(items: list[str], flag: str) -> dict[str, str]:
    """Items -> dict; the value may itself hold '='. A malformed item raises ValueError whose
    message names ``flag`` (callers re-raise it as their own one-line error)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"{flag} expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out
