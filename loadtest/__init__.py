"""HTTP load tests (Locust) and the HTTP serving benchmark (``python -m loadtest.bench_http``)."""
