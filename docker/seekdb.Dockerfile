# A small OceanBase-compatible database for Compose and the end-to-end tests: seekdb (OceanBase's
# engine, MySQL mode, from PyPI's pylibseekdb) on port 2881, data in /var/lib/seekdb. Not for production:
# point the pipeline at your OceanBase cluster instead (SOURCE_HOST/SOURCE_PORT in docker/.env).
#   docker build -f docker/seekdb.Dockerfile -t obflow/seekdb:0.1.0 .
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
COPY docker/build-certs/ /tmp/build-certs/
COPY constraints.txt /tmp/constraints.txt
RUN python3 -m venv /opt/seekdb \
 && if [ -f /tmp/build-certs/ca.pem ]; then export PIP_CERT=/tmp/build-certs/ca.pem; fi \
 && /opt/seekdb/bin/pip install --no-cache-dir --disable-pip-version-check -c /tmp/constraints.txt pylibseekdb \
 && engine_dir="$(/opt/seekdb/bin/python -c 'import os, pylibseekdb; print(os.path.dirname(pylibseekdb.__file__))')" \
 && test -x "$engine_dir/seekdb" \
 && ln -s "$engine_dir/seekdb" /opt/seekdb/bin/seekdb \
 && rm -rf /tmp/build-certs

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="obflow-seekdb" \
      org.opencontainers.image.description="seekdb (OceanBase-compatible, MySQL mode) for obflow's Compose stack and tests"
COPY --from=build /opt/seekdb /opt/seekdb
RUN groupadd --system --gid 10001 seekdb \
 && useradd --system --uid 10001 --gid seekdb --home-dir /var/lib/seekdb --create-home --shell /usr/sbin/nologin seekdb
USER 10001:10001
ENV SEEKDB_PORT=2881
EXPOSE 2881
VOLUME ["/var/lib/seekdb"]
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=5 \
  CMD ["/opt/seekdb/bin/python", "-c", \
       "import os, socket; socket.create_connection(('127.0.0.1', int(os.environ['SEEKDB_PORT'])), 2).close()"]
# seekdb needs a network interface besides loopback (it fails to start with --network none)
ENTRYPOINT ["/bin/sh", "-c", "exec /opt/seekdb/bin/seekdb --nodaemon --port \"$SEEKDB_PORT\" --base-dir /var/lib/seekdb"]
