# The Entrepôt container image: one binary on an empty base, so it builds with no network and no base
# image to pull. Build it with `scripts/docker-image` (it builds the release binary on the host, stages
# the root filesystem under target/docker-image/rootfs and uses that directory as the build context):
#
#   scripts/docker-image                 # -> entrepot:latest
#   docker run -d -p 5000:5000 -v entrepot-data:/var/lib/entrepot entrepot
#
# Every `entrepot serve` flag can also be set with its ENTREPOT_* variable (`-e ENTREPOT_LOG=debug`) or by
# appending flags after the image name (`docker run ... entrepot --max-blob-bytes 1000000000`).
FROM scratch

COPY rootfs/ /

ENV ENTREPOT_LISTEN=0.0.0.0:5000 \
    ENTREPOT_DATA_DIR=/var/lib/entrepot
EXPOSE 5000
VOLUME /var/lib/entrepot
WORKDIR /var/lib/entrepot

ENTRYPOINT ["/usr/local/bin/entrepot", "serve"]
