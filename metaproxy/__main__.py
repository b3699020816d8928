"""``python -m metaproxy`` is the ``metaproxy`` command."""

from metaproxy.cli import main

main()
