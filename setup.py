"""Build the optional C accelerator of the Thrift walker (everything else is in pyproject.toml).

The extension is optional: without a C compiler metaproxy installs and works, with the
pure-Python walker (metaproxy.wire.binary.Walker) doing the same job more slowly.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "metaproxy.wire._walk",
            sources=["metaproxy/wire/_walk.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
