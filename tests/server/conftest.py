"""The server tests talk to the app the way the dashboard page does in a browser on this machine.

The guard (convscope/server/security.py) answers only to loopback Host names and takes forms and
uploads only with the page's own Origin; Starlette's TestClient by default sends Host
`testserver` and no Origin. So in this folder a TestClient defaults to base URL
http://127.0.0.1:8000 with that Origin on every request. Nothing widens the server's rules:
tests of the guard itself (test_security.py) pass base_url and headers explicitly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

LOCAL = "http://127.0.0.1:8000"


@pytest.fixture(scope="module", autouse=True)
def page_like_test_client() -> Iterator[None]:
    # module scope, so module-scoped client fixtures are built with it too
    init = TestClient.__init__

    def local_init(
        self: TestClient, app: Any, base_url: str = LOCAL, *args: Any,
        headers: dict[str, str] | None = None, **kwargs: Any,
    ) -> None:  # fmt: skip
        headers = {"origin": base_url.rstrip("/"), **(headers or {})}
        init(self, app, base_url, *args, headers=headers, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TestClient, "__init__", local_init)
        yield
