# A stand-in for the official prom/prometheus image, from Debian's own package (Prometheus 2.42, with
# promtool), for machines that cannot pull images: docker/compose.yaml uses it through PROMETHEUS_IMAGE.
# Laid out as the official image: configuration /etc/prometheus/prometheus.yml, data /prometheus,
# port 9090, the same default arguments, and wget for the health check.
#   docker build -f docker/standins/prometheus.Dockerfile -t obflow/prometheus:0.1.0 .
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
USER 0
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus wget \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus \
 && chown prometheus:prometheus /prometheus
LABEL org.opencontainers.image.title="obflow-prometheus" \
      org.opencontainers.image.description="Prometheus from Debian's package: a stand-in for the official image"
# the user Debian's package creates (its id is the package's to choose)
# hadolint ignore=DL3066
USER prometheus
WORKDIR /prometheus
EXPOSE 9090
VOLUME ["/prometheus"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9090/-/ready"]
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
