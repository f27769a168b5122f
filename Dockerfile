# Herald's image: one static binary on an empty base.
#
#   docker build -t herald:0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .
#
# Without a Docker engine, `scripts/image.sh build` builds the same final stage (this file's ENTRYPOINT, CMD and
# LABELs) from `cargo build` and writes an OCI archive that `docker load`, `podman load` and `ctr import` accept
# (docs/install.md). `scripts/image.sh check` builds this final stage with `podman build` (buildah) and
# compares what it reads from it with the archive.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Static glibc: nothing to load at run time, so the final image needs no libraries. `--target` keeps build scripts
# and proc macros dynamic (they run on the build host). The CA bundle: kube's client loads the system's roots when a
# kubeconfig names no CA, and does not start without any.
ARG REVISION=unknown
RUN HERALD_REVISION=${REVISION} RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --profile dist --locked --target x86_64-unknown-linux-gnu --bin herald \
 && mkdir -p /rootfs/usr/local/bin /rootfs/etc/ssl/certs /rootfs/proc /rootfs/sys /rootfs/dev /rootfs/tmp \
 && cp target/x86_64-unknown-linux-gnu/dist/herald /rootfs/usr/local/bin/herald \
 && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
COPY --from=build /rootfs/ /
LABEL org.opencontainers.image.title="herald"
LABEL org.opencontainers.image.description="Bare-metal LoadBalancer for Kubernetes: IP allocation, Layer 2 (ARP/NDP) and BGP announcement"
LABEL org.opencontainers.image.version="${VERSION}"
LABEL org.opencontainers.image.revision="${REVISION}"
LABEL org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/usr/local/bin/herald"]
CMD ["agent"]
