"""Segue serving package (docs/ARCHITECTURE.md).

* ``serve_app.core``: the Ray-free recommender (scoring, blending, lookup);
* ``serve_app.artifacts``: the bundle and its storage;
* ``serve_app.shell``: the HTTP API and the serving collaborators;
* ``serve_app.app``: the Ray Serve deployment graph (``serve_app.app:build_app``).
"""


def code_revision() -> str | None:
    """The commit of the deployed code zip (its generated ``serve_app._build``); None in a checkout."""
    try:
        from serve_app._build import REVISION
    except ModuleNotFoundError:
        return None
    return REVISION
