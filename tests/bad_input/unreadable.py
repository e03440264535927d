"""Making files really unreadable in tests, also when they run as root (root reads mode-000
files through CAP_DAC_OVERRIDE; these helpers give it up for a thread or a child process)."""

from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager

_CAP_VERSION_3 = 0x20080522
_DAC_CAPS = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _capset_effective(mask_off: int, restore: int | None = None) -> int:
    """Clear ``mask_off`` from this thread's effective capabilities (or set them back to
    ``restore``); returns the effective set before. Linux capabilities are per thread."""
    libc = ctypes.CDLL(None, use_errno=True)
    hdr = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capget(ctypes.byref(hdr), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    before = data[0].effective
    data[0].effective = restore if restore is not None else before & ~mask_off
    if libc.capset(ctypes.byref(hdr), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    return before


@contextmanager
def permissions_enforced():
    """Inside, mode bits are enforced for this thread even as root (the Spark session and
    its workers, started earlier, are other processes and keep theirs)."""
    if os.geteuid() != 0:
        yield
        return
    before = _capset_effective(_DAC_CAPS)
    try:
        yield
    finally:
        _capset_effective(0, restore=before)


def setpriv_prefix() -> list[str]:
    """A command prefix running a child process (and all it starts) without the root
    capabilities that bypass file permissions; empty when not root."""
    import shutil

    if os.geteuid() != 0:
        return []
    exe = shutil.which("setpriv")
    if exe is None:
        import pytest

        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    return [exe, "--bounding-set", "-dac_override,-dac_read_search", "--"]
