"""The serving path's allocator setting (glibc only)."""

from __future__ import annotations

import platform

import pytest

from onepiece.model.allocator import retain_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_glibc_accepts_the_thresholds_once_per_process():
    assert retain_freed_memory() is True
    assert retain_freed_memory() is True  # idempotent (cached)
