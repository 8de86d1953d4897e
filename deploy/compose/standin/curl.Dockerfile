# Stand-in for curlimages/curl, for machines that cannot pull (scripts/compose-images.sh builds
# it; never tagged with the official name): Debian's curl and /bin/sh, run as an unprivileged
# user, curl as the entrypoint, like the official image.
ARG BASE
FROM ${BASE}
RUN useradd --uid 100 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin curl_user
USER curl_user
ENTRYPOINT ["curl"]
CMD ["--help"]
