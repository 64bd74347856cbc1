# A stand-in for the official zookeeper image, from Debian's own package (ZooKeeper 3.8), for machines
# that cannot pull images: docker/compose.yaml uses it through ZOOKEEPER_IMAGE. A single standalone
# server on 2181 with its data in /data, as the official image has it; four-letter words: ruok, srvr, mntr.
#   docker build -f docker/standins/zookeeper.Dockerfile -t obflow/zookeeper:0.1.0 .
# BASE_IMAGE: Debian bookworm (Java is pulled in by the package; a base that has Java 17 saves it).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
USER 0
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends zookeeper \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data /datalog \
 && chown zookeeper:zookeeper /data /datalog \
 && printf '%s\n' 'tickTime=2000' 'initLimit=10' 'syncLimit=5' 'dataDir=/data' 'dataLogDir=/datalog' \
      'clientPort=2181' 'admin.enableServer=false' '4lw.commands.whitelist=ruok,srvr,mntr' \
      > /etc/zookeeper/conf/zoo.cfg
LABEL org.opencontainers.image.title="obflow-zookeeper" \
      org.opencontainers.image.description="ZooKeeper from Debian's package: a stand-in for the official image"
# the user Debian's package creates (its id is the package's to choose)
# hadolint ignore=DL3066
USER zookeeper
EXPOSE 2181
VOLUME ["/data", "/datalog"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/2181 && echo ruok >&3 && grep -q imok <&3"]
# the server in the foreground, logging to stderr (Debian's scripts bind SLF4J to nothing)
CMD ["java", "-Xmx256m", "-cp", "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar", \
     "org.apache.zookeeper.server.quorum.QuorumPeerMain", "/etc/zookeeper/conf/zoo.cfg"]
