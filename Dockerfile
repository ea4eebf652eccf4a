# livechannel in a container: `docker build -t livechannel .`, then
#   docker run -p 1935:1935 -p 8080:8080 -v livechannel-data:/var/lib/livechannel livechannel
# With a config file: -v ./livechannel.toml:/etc/livechannel/livechannel.toml:ro -e LIVECHANNEL_CONFIG=/etc/livechannel/livechannel.toml
# contrib/check-dockerfile.sh runs this file's build and start steps outside Docker (see the README).

# Build stage: the release binary, from the locked dependency versions.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin livechannel

# Runtime stage: Debian slim, CA certificates for S3 over HTTPS and callbacks, ffmpeg for the
# PutLiveChannel Snapshot decoders ([snapshots] ffmpeg), an unprivileged user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates ffmpeg \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/livechannel --shell /usr/sbin/nologin livechannel \
 && mkdir -p /var/lib/livechannel /etc/livechannel \
 && chown livechannel:livechannel /var/lib/livechannel
COPY --from=build /src/target/release/livechannel /usr/local/bin/livechannel
USER livechannel
# Segments, playlists and the SQLite metadata (unless the config moves them to S3 and PostgreSQL).
VOLUME /var/lib/livechannel
EXPOSE 1935 8080
ENV LIVECHANNEL_DATA_DIR=/var/lib/livechannel \
    LIVECHANNEL_RTMP_LISTEN=0.0.0.0:1935 \
    LIVECHANNEL_HTTP_LISTEN=0.0.0.0:8080
# SIGTERM drains (readyz 503, publishes end after storing their open segment), then flushes and exits:
# give `docker stop` a --time of at least 60 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/livechannel"]
CMD ["serve"]
