# One Flink image for the JobManager and the TaskManagers (R8.1, R8.2): Java 17, Python, PyFlink,
# the obflow job and every dependency inside (R8.4). Flink itself is PyFlink's bundled distribution
# (the same 2.3 the job is built against, flink-python in lib/ for the application mode) in
# /opt/obflow/flink; the operator mounts config.yaml at /opt/flink/conf. Configured only by environment variables and mounted files (R8.6).
#   docker build -f docker/flink.Dockerfile -t obflow/flink:0.1.0 .
# BASE_IMAGE: the official Flink image by default; any Debian-like image with Java 17 works, with
# Python 3.11 or 3.12 and its venv module already in it or installable with apt-get.
ARG BASE_IMAGE=flink:2.3.0-java17

FROM ${BASE_IMAGE} AS build
# the build stage installs packages as root and is thrown away
# hadolint ignore=DL3002
USER 0
WORKDIR /src
# Python (if the base has none) and a C compiler for the dependencies without wheels (cprotobuf);
# this stage is thrown away
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY docker/build-certs/ /tmp/build-certs/
# the dependencies first (PyFlink and its Flink), in a layer of their own: a change of obflow's
# sources leaves it cached
COPY pyproject.toml constraints.txt README.md docker/requirements.py ./
RUN python3 -m venv /opt/obflow \
 && if [ -f /tmp/build-certs/ca.pem ]; then export PIP_CERT=/tmp/build-certs/ca.pem; fi \
 && python3 requirements.py pyproject.toml flink > requirements.txt \
 && /opt/obflow/bin/pip install --no-cache-dir --disable-pip-version-check -c constraints.txt -r requirements.txt \
 && flink_home="$(/opt/obflow/bin/python -c 'import os, pyflink; print(os.path.dirname(pyflink.__file__))')" \
 && cp "$flink_home"/opt/flink-python-*.jar "$flink_home/lib/" \
 && ln -s "$flink_home" /opt/obflow/flink
COPY obflow ./obflow
COPY capture_agent ./capture_agent
COPY flink_job ./flink_job
COPY operator ./operator
RUN if [ -f /tmp/build-certs/ca.pem ]; then export PIP_CERT=/tmp/build-certs/ca.pem; fi \
 && /opt/obflow/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps . \
 && find /opt/obflow -name '__pycache__' -prune -exec rm -rf {} + \
 && rm -rf /tmp/build-certs

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="obflow-flink" \
      org.opencontainers.image.description="obflow Flink JobManager and TaskManager with the PyFlink job" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 0
# PyFlink's thread mode (pemja) loads libpython into the JVM: the shared library must be there
# hadolint ignore=DL3008
RUN if ! python3 -c 'import venv' 2>/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && if ! python3 -c 'import ctypes, sysconfig; ctypes.CDLL(sysconfig.get_config_var("INSTSONAME"))' 2>/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends "libpython$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && if ! id -u flink >/dev/null 2>&1; then \
      groupadd --system --gid 9999 flink \
      && useradd --system --uid 9999 --gid flink --home-dir /opt/flink --shell /usr/sbin/nologin flink; \
    fi \
 && mkdir -p /opt/flink/conf /data \
 && chown flink:flink /opt/flink/conf /data
COPY --from=build /opt/obflow /opt/obflow
COPY docker/flink-entrypoint.sh /usr/local/bin/flink-entrypoint.sh
ENV PATH=/opt/obflow/bin:$PATH \
    FLINK_HOME=/opt/obflow/flink \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 9999:9999
WORKDIR /opt/flink
EXPOSE 6123 6124 8081 9249 9310
# JobManager: REST /config; TaskManager: its metrics reporter (obflow-healthcheck tells them apart)
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["obflow-healthcheck"]
ENTRYPOINT ["/usr/local/bin/flink-entrypoint.sh"]
CMD ["help"]
