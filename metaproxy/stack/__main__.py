"""``python -m metaproxy.stack up|down|status`` — the same as ``metaproxy stack …``."""

from metaproxy.stack.cli import stack

stack(prog_name="python -m metaproxy.stack")
