# The entitlements service: built in a Rust image, run from a small Debian
# image as a non-root user. The data directory is the /data volume; gRPC on
# 50051, the admin HTTP listener (metrics, /healthz, /readyz) on 9464.
#
#   docker build -t entitlements .
#   docker run -v entitlements-data:/data -p 50051:50051 \
#     -v $PWD/entitlements.toml:/etc/entitlements/entitlements.toml:ro \
#     -e ENTITLEMENTS_CONFIG=/etc/entitlements/entitlements.toml entitlements

FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
# The manifest names the benchmarks, so cargo wants their sources too.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY policies policies
COPY benches benches
COPY src src
RUN cargo build --release --locked --bin entitlements \
 && strip target/release/entitlements

FROM docker.io/library/debian:bookworm-slim
# CA certificates for TLS to a PostgreSQL store; nothing else is needed
# (no OpenSSL: TLS is rustls).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 entitlements \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home entitlements \
 && mkdir /data \
 && chown entitlements:entitlements /data
COPY --from=build /src/target/release/entitlements /usr/local/bin/entitlements
USER 10001:10001
VOLUME /data
EXPOSE 50051 9464
# Listen beyond loopback and keep the store on the volume; authentication
# (a JWT key) comes from the settings file or the environment.
ENV ENTITLEMENTS_LISTEN=0.0.0.0:50051 \
    ENTITLEMENTS_DATA_DIR=/data
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["entitlements", "health", "--server", "http://127.0.0.1:50051", "--timeout-ms", "4000"]
ENTRYPOINT ["entitlements"]
CMD ["serve"]
