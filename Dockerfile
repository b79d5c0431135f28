# rollcall: multi-stage build, runs as a non-root user, keeps its sled store on a volume.
#   docker build -t rollcall .
#   docker run -v rollcall-data:/var/lib/rollcall -v $PWD/rollcall.toml:/etc/rollcall/rollcall.toml:ro \
#              -e SUPERSET_PASSWORD=… rollcall
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The manifest names the benchmark target, so its file must exist for cargo to read it.
COPY benches ./benches
RUN cargo build --release --locked --bin rollcall

FROM debian:bookworm-slim
# libssl3: the Kafka sink's librdkafka links the system OpenSSL (SSL and SASL_SSL listeners).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/rollcall --shell /usr/sbin/nologin rollcall \
 && mkdir -p /var/lib/rollcall /etc/rollcall \
 && chown rollcall:rollcall /var/lib/rollcall
COPY --from=build /src/target/release/rollcall /usr/local/bin/rollcall
USER rollcall
WORKDIR /var/lib/rollcall
VOLUME ["/var/lib/rollcall"]
ENV ROLLCALL_CONFIG=/etc/rollcall/rollcall.toml
# /healthz, /readyz, /metrics and /status: the config's `listen` must be 0.0.0.0:9464 to be
# reachable from outside the container (deploy/rollcall.toml is).
EXPOSE 9464
# The slim image has no curl: rollcall asks its own /healthz.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["rollcall", "healthcheck"]
ENTRYPOINT ["rollcall"]
CMD ["run"]
