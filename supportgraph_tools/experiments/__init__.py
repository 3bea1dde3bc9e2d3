"""Demo and evaluation tools of `serve_app.experiments`."""
