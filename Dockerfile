# syntax=docker/dockerfile:1
#
# tokenvend container image.
#   docker build -t tokenvend .
#   docker run --rm -p 127.0.0.1:8080:8080 --read-only --cap-drop ALL \
#     -v "$PWD/secrets:/run/secrets:ro" -e TOKENVEND_DATABASE_URL_FILE=/run/secrets/database_url \
#     -e TOKENVEND_MASTER_KEY_FILE=/run/secrets/master_key \
#     -e TOKENVEND_ADMIN_KEY_FILE=/run/secrets/admin_key tokenvend
# (keys and passwords as files, read through the *_FILE variables, not as plain variables).
# Without TOKENVEND_DATABASE_URL the embedded SQLite store is kept under
# /var/lib/tokenvend/data; mount a volume there to keep it, with master.key and admin.key.
# The image is built without the `demo` feature: no `tokenvend demo`, no local issuer and
# no issuer test key in it.

# Base images are pinned by digest (the multi-platform index of the tag, as Docker's
# official-images records list it), so that a rebuild gets the same bytes. To move to
# newer ones, run scripts/pin-images (`docker buildx imagetools inspect`) and replace the
# digests here and in docker-compose.yml.
FROM rust:1.97.1-bookworm@sha256:593db038d36ea0d2e5b22a2e095eb95dbec607d88d658c2f35f65ee880b4f93a AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The workspace's other member (the local edX-like issuer) must be present for Cargo to
# read the workspace, though the production binary below is built without it.
COPY crates ./crates
# sqlx::migrate! embeds the migrations at compile time.
COPY migrations ./migrations
# The dashboard page is embedded at compile time too.
COPY assets ./assets
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --no-default-features --bin tokenvend \
 && install -m 0755 target/release/tokenvend /usr/local/bin/tokenvend

# debian:bookworm-slim as built on 2026-09-18 (tag bookworm-20260918-slim).
FROM debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tokenvend \
 && useradd --system --uid 10001 --gid tokenvend --home-dir /var/lib/tokenvend \
      --create-home --shell /usr/sbin/nologin tokenvend
COPY --from=builder /usr/local/bin/tokenvend /usr/local/bin/tokenvend
USER 10001:10001
WORKDIR /var/lib/tokenvend
# Listen on all interfaces inside the container (the binary's default is 127.0.0.1:8080).
ENV TOKENVEND_LISTEN=0.0.0.0:8080 \
    TOKENVEND_DATA_DIR=/var/lib/tokenvend/data
EXPOSE 8080
ENTRYPOINT ["tokenvend"]
CMD ["serve"]
