"""Builds the native pHash kernel; everything else is declared in pyproject.toml.

SUPPORTGRAPH_MARCH picks the CPU the kernel is tuned for: "native" (default: the machine that installs
it, which is where `make` runs it) or a portable level such as "x86-64-v3" for images built elsewhere;
an empty value adds no -march flag.
"""

import os

from setuptools import Extension, setup

march = os.environ.get("SUPPORTGRAPH_MARCH", "native")
# -fno-wrapv undoes Python's default -fwrapv, which stops gcc vectorising the int32 dot products
# (3x slower); the kernel's sums never overflow, so the C semantics are the same.
# -ffp-contract=off: no fused multiply-adds, so the region detector's float32/float64 values are the ones
# numpy computes on every CPU (region.py).
flags = ["-O3", "-std=c11", "-fno-wrapv", "-ffp-contract=off"] + ([f"-march={march}"] if march else [])

setup(
    ext_modules=[
        Extension(
            "serve_app.frames._phash_native",
            sources=["serve_app/frames/_phash_native.c"],
            extra_compile_args=flags,
            optional=True,  # without a compiler the exact torch path is used
        )
    ]
)
