"""Demo and evaluation tools of `serve_app.frames`."""
