"""The build of the optional C tunnel core (everything else is in pyproject.toml).

``optional=True``: without a compiler, or off Linux, the build of the extension fails
quietly and wsgate runs its pure-Python tunnel (:mod:`wsgate.proxy.splice` says which).
"""

import sys

from setuptools import Extension, setup

core = Extension(
    "wsgate.proxy._splice",
    sources=["src/wsgate/proxy/_splice.c", "src/wsgate/proxy/_splice_tls.c"],
    depends=["src/wsgate/proxy/_splice.h"],
    libraries=["dl"],  # dlopen, for the OpenSSL that Python's _ssl links (_splice_tls.c)
    extra_compile_args=["-O2", "-std=gnu11", "-fvisibility=hidden"],  # only PyInit_ out
    optional=True,
)

setup(ext_modules=[core] if sys.platform.startswith("linux") else [])
