# A stand-in for the official prom/alertmanager image, from Debian's own package (Alertmanager 0.25),
# for machines that cannot pull images: docker/compose.yaml uses it through ALERTMANAGER_IMAGE.
# Laid out as the official image: configuration /etc/alertmanager/alertmanager.yml, data /alertmanager,
# port 9093, the same default arguments, and wget for the health check.
#   docker build -f docker/standins/alertmanager.Dockerfile -t obflow/alertmanager:0.1.0 .
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
USER 0
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus-alertmanager wget \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /alertmanager \
 && chown prometheus:prometheus /alertmanager
LABEL org.opencontainers.image.title="obflow-alertmanager" \
      org.opencontainers.image.description="Alertmanager from Debian's package: a stand-in for the official image"
# the user Debian's package creates (its id is the package's to choose)
# hadolint ignore=DL3066
USER prometheus
WORKDIR /alertmanager
EXPOSE 9093
VOLUME ["/alertmanager"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9093/-/ready"]
ENTRYPOINT ["/usr/bin/prometheus-alertmanager"]
CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]
