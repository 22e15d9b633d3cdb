"""Segue serving package: the artifact bundle, the recommender core and the Serve graph.

Modules that hold the core (bundle, storage, features, text) import numpy/scipy/pyarrow
only, never Ray, so they are tested directly and shared with the jobs.
"""


def code_revision() -> str | None:
    """The commit of the deployed code zip (its generated ``serve_app._build``); None in a checkout."""
    try:
        from serve_app._build import REVISION
    except ModuleNotFoundError:
        return None
    return REVISION
