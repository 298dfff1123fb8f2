# syntax=docker/dockerfile:1
#
# token-service: a multi-stage build. The runtime image holds the binary only, on a
# distroless base (glibc, CA certificates, no shell, no package manager), as a non-root user.
#
#   docker build -t token-service .
#   docker run --rm token-service keygen

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Compilers for the bundled SQLite and for ring (rustls) come with the image; nothing else
# is needed (no OpenSSL: TLS is rustls).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY assets ./assets
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin token-service \
    && install -D -m 0755 target/release/token-service /out/token-service \
    && mkdir -p /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/token-service /usr/local/bin/token-service
# Working directory for the embedded SQLite default (./data); mount a volume here to use it.
COPY --from=build --chown=65532:65532 /out/data /data
WORKDIR /data
# Numeric, so that orchestrators can verify it is not root (Kubernetes runAsNonRoot).
USER 65532:65532
ENV API_HOST=0.0.0.0 \
    TOKEN_API_EXTERNAL_PORT=8007 \
    LOG_FORMAT=json
EXPOSE 8007
ENTRYPOINT ["/usr/local/bin/token-service"]
CMD ["serve"]
