"""``python -m metaproxy_devstack stack up|down|status`` and ``... sample load`` — the same as
``metaproxy stack …`` and ``metaproxy sample …``.
"""

from metaproxy_devstack.cli import devstack

devstack(prog_name="python -m metaproxy_devstack")
