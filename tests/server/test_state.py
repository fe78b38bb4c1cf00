"""The dashboard's picture cache: an LRU that renders a picture once, however many ask at once."""

from __future__ import annotations

import threading
import time

import pytest

from convscope.server.state import PictureCache


def test_concurrent_requests_render_one_picture_once() -> None:
    cache = PictureCache(max_items=4)
    calls = []

    def make() -> bytes:
        calls.append(1)
        time.sleep(0.2)  # long enough for every thread to ask while it renders
        return b"png"

    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_make(("k",), make))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [b"png"] * 8 and len(calls) == 1
    assert (cache.misses, cache.hits) == (1, 7)


def test_a_failed_render_is_not_cached_and_the_lru_is_bounded() -> None:
    cache = PictureCache(max_items=2)

    def boom() -> bytes:
        raise ValueError("cannot draw")

    with pytest.raises(ValueError, match="cannot draw"):
        cache.get_or_make(("a",), boom)
    assert cache.get_or_make(("a",), lambda: b"A") == b"A"  # the next request renders it
    cache.get_or_make(("b",), lambda: b"B")
    cache.get_or_make(("c",), lambda: b"C")
    assert len(cache) == 2 and cache.get_or_make(("a",), lambda: b"A2") == b"A2"  # "a" was evicted
