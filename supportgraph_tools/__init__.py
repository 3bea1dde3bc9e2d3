"""Tools that exercise the runtime and ship apart from it: the demo, the generated screen-share clips
and screens, and the evaluations (frame dedup, retrieval, router, screen reading, experiments offline).

No deployment or replica imports this package (tests/test_layering.py); the `supportgraph` CLI, the
benchmarks and the tests do. It mirrors `serve_app`'s areas: `supportgraph_tools.frames` holds what
evaluates or feeds `serve_app.frames`, and so on.
"""
