"""The recommender itself: pure functions and small classes over numpy/scipy arrays.

No Ray, FastAPI, Gradio or boto3 here (``tests/test_architecture.py`` checks it), and nothing
from the rest of ``serve_app``: the jobs, the benchmarks and the tests use it in one process,
the Serve deployments wrap it.
"""
