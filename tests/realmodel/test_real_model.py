"""Every flow of ``flows.py`` as a test against llama-cpp-python's server (see conftest.py for when it runs)."""

from __future__ import annotations

import pytest

from .flows import FLOWS
from .harness import RealServers

pytestmark = pytest.mark.realmodel


@pytest.mark.parametrize(("name", "flow"), FLOWS, ids=[f.__name__ for _, f in FLOWS])
def test_flow(real: RealServers, name: str, flow) -> None:  # type: ignore[no-untyped-def]
    print(f"{name}: {flow(real)}")
