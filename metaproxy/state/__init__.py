"""metaproxy's state: one database, opened and shaped only here.

:mod:`~metaproxy.state.db` owns the connection and its transactions, :mod:`~metaproxy.state.schema`
every table, and one module per concern holds that concern's statements: mounts added at run
time, policies, the migration journal and its flips, the gateway's cache rules and read log.
Code outside this package never writes SQL.
"""

from metaproxy.state.db import StateDB, StateError, open_state, shown, state_url

__all__ = ["StateDB", "StateError", "open_state", "shown", "state_url"]
