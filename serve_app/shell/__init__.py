"""The serving shell around the core: the HTTP API (FastAPI) and its collaborators (cache and
warm-up, weights, sessions, metrics, hot reload), and the Ray-specific pieces the deployments in
``serve_app.app`` are made of.
"""
