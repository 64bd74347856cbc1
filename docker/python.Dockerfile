# The capture agent and the operator: one Python environment with obflow and one component's extras.
#   docker build -f docker/python.Dockerfile --build-arg EXTRAS=capture -t obflow/capture:0.1.0 .
#   docker build -f docker/python.Dockerfile --build-arg EXTRAS=operator --build-arg COMMAND=operator \
#     -t obflow/operator:0.1.0 .
#   docker build -f docker/python.Dockerfile --build-arg EXTRAS=datahub --build-arg COMMAND=datahub-emulator \
#     --build-arg DEV_TOOLS=yes -t obflow/datahub-emulator:0.1.0 .
# DEV_TOOLS=yes keeps obflow_dev (the DataHub emulator and the other local tooling); every other image leaves it out.
# BASE_IMAGE: any Debian-like image with python3 (3.11 or 3.12) and its venv module.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG EXTRAS=capture
ARG DEV_TOOLS=no
WORKDIR /src
# a C compiler for the dependencies without wheels (cprotobuf); this stage is thrown away
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && if ! python3 -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))'; then \
      apt-get install -y --no-install-recommends python3-dev; \
    fi \
 && rm -rf /var/lib/apt/lists/*
COPY docker/build-certs/ /tmp/build-certs/
# the dependencies first, in a layer of their own: a change of obflow's sources leaves it cached
COPY pyproject.toml constraints.txt README.md docker/requirements.py ./
RUN python3 -m venv /opt/obflow \
 && if [ -f /tmp/build-certs/ca.pem ]; then export PIP_CERT=/tmp/build-certs/ca.pem; fi \
 && python3 requirements.py pyproject.toml "${EXTRAS}" > requirements.txt \
 && /opt/obflow/bin/pip install --no-cache-dir --disable-pip-version-check -c constraints.txt -r requirements.txt
COPY obflow ./obflow
COPY capture_agent ./capture_agent
COPY flink_job ./flink_job
COPY operator ./operator
COPY obflow_dev ./obflow_dev
RUN if [ -f /tmp/build-certs/ca.pem ]; then export PIP_CERT=/tmp/build-certs/ca.pem; fi \
 && if [ "${DEV_TOOLS}" != yes ]; then rm -rf obflow_dev; fi \
 && /opt/obflow/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps . \
 && find /opt/obflow -name '__pycache__' -prune -exec rm -rf {} + \
 && rm -rf /tmp/build-certs

FROM ${BASE_IMAGE}
ARG EXTRAS=capture
ARG COMMAND=capture
LABEL org.opencontainers.image.title="obflow-${EXTRAS}" \
      org.opencontainers.image.description="obflow ${COMMAND}: OceanBase -> DataHub -> Flink -> files" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/obflow /opt/obflow
# state and emulator directories exist and are the user's: a named volume mounted over them (Compose's
# capture-state, datahub-data) takes their owner; over a missing directory it would be root's
RUN groupadd --system --gid 10001 obflow \
 && useradd --system --uid 10001 --gid obflow --home-dir /var/lib/obflow --create-home --shell /usr/sbin/nologin obflow \
 && install -d -o obflow -g obflow /var/lib/obflow/state /var/lib/obflow/datahub
ENV PATH=/opt/obflow/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OBFLOW_COMMAND=${COMMAND}
USER 10001:10001
WORKDIR /var/lib/obflow
# capture: /readyz on capture.http_port (9300); operator: /healthz on --liveness-port (8080); the DataHub
# emulator: its /healthz; OBFLOW_HEALTH_URL overrides
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["obflow-healthcheck"]
# no arguments: the image's component (OBFLOW_COMMAND); any arguments: `obflow ARGS`
ENTRYPOINT ["obflow-container"]
