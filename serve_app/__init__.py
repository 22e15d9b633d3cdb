"""Segue serving package: the artifact bundle, the recommender core and the Serve graph.

Modules that hold the core (bundle, storage, features, text) import numpy/scipy/pyarrow
only, never Ray, so they are tested directly and shared with the jobs.
"""
