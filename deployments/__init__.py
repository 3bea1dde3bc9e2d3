"""Thin Ray Serve deployments over serve_app, and the graph builder (`deployments.graph:build_app`)."""
