"""The stack's components, one module per family: each has a ``prepare_*`` function (write the
config, return the command and its environment) and a ``*_ready`` check that proves the
component works. :data:`metaproxy_devstack.launcher.COMPONENTS` puts them in a table.
"""
