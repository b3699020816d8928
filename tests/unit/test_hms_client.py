"""metaproxy's own HMS client: its connection block lets the bindings' exceptions through."""

from __future__ import annotations

import socket

import pytest
from hive_metastore.ttypes import MetaException, NoSuchObjectException

from metaproxy.hms import connect

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("exc", [MetaException(message="m"), NoSuchObjectException(message="n")])
def test_an_hms_exception_leaves_the_block_as_itself(exc: Exception) -> None:
    """The generated exceptions are immutable: a generator-based block made a TypeError of them."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with pytest.raises(type(exc)) as raised, connect(f"thrift://127.0.0.1:{srv.getsockname()[1]}"):
            raise exc
    assert raised.value is exc
