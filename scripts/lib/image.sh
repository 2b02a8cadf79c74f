# The product's image, built with podman from the Dockerfile's `prebuilt` target (see scripts/image).
# Sourced after scripts/lib/common.sh; defines functions only.

KB_IMAGE_REPO=localhost/kafka-backup
# The Dockerfile's `FROM debian:bookworm-slim` resolves to this name in podman's store.
KB_IMAGE_BASE=docker.io/library/debian:bookworm-slim
export CONTAINERS_CONF=$TE_ROOT/scripts/testenv.d/node/containers.conf

# The chart's appVersion: what `helm install` runs by default.
kb_image_default_tag() {
  awk '$1 == "appVersion:" { gsub(/"/, "", $2); print $2 }' "$TE_ROOT/deploy/helm/kafka-backup/Chart.yaml"
}

kb_image_tools() { te_apt_install podman buildah runc debootstrap binutils; }

# The Debian mirror of the machine's apt sources (debootstrap needs one).
kb__debian_mirror() {
  local m
  m=$(grep -hs '^URIs:' /etc/apt/sources.list.d/debian.sources | awk '$2 !~ /security/ { print $2; exit }')
  [ -n "$m" ] || m=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list 2>/dev/null)
  [ -n "$m" ] || te_die "image: no Debian bookworm mirror in the apt sources"
  printf '%s\n' "$m"
}

# kb_image_base: debian:bookworm-slim in podman's store, made once with debootstrap.
kb_image_base() {
  podman image exists "$KB_IMAGE_BASE" && return 0
  local root=$TE_CACHE/image/bookworm-rootfs mirror
  mirror=$(kb__debian_mirror)
  te_log "image: making $KB_IMAGE_BASE with debootstrap from $mirror (about a minute)"
  rm -rf "$root"
  mkdir -p "$root"
  debootstrap --variant=minbase bookworm "$root" "$mirror" >"$TE_LOGS/debootstrap.log" 2>&1 \
    || { te_show_log debootstrap; te_die "image: debootstrap failed"; }
  # What the official slim image leaves out: documentation, manuals, locales, package lists.
  rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*
  tar -C "$root" --numeric-owner -c . | podman import --change 'CMD ["bash"]' - "$KB_IMAGE_BASE" >/dev/null
  rm -rf "$root"
}

# kb_image_binary: the release binary built on this host; prints its path.
kb_image_binary() {
  local dir
  cargo build --release --locked -p kafka-backup-cli >&2 || te_die "image: cargo build --release failed"
  dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  printf '%s\n' "$dir/release/kafka-backup"
}

# kb_image_build BINARY TAG: the Dockerfile's `prebuilt` target with BINARY, tagged TAG and
# TAG-<image id>; prints the second name, which changes whenever the image does (so a Deployment
# that names it rolls out a new build, and a node never runs a stale image under an old name).
kb_image_build() {
  local bin=$1 tag=$2 ctx id
  ctx=$(mktemp -d)
  cp "$bin" "$ctx/kafka-backup"
  # The release profile keeps line tables for backtraces on the host (about 170 MiB); the image
  # keeps the symbols only, as the Dockerfile's release stage does.
  strip --strip-debug "$ctx/kafka-backup"
  podman build --pull=never --network host --target prebuilt -f "$TE_ROOT/Dockerfile" \
    -t "$KB_IMAGE_REPO:$tag" "$ctx" >"$TE_LOGS/image-build.log" 2>&1 \
    || { rm -rf "$ctx"; te_show_log image-build; te_die "image: podman build failed"; }
  rm -rf "$ctx"
  id=$(podman image inspect --format '{{.Id}}' "$KB_IMAGE_REPO:$tag")
  podman tag "$KB_IMAGE_REPO:$tag" "$KB_IMAGE_REPO:$tag-${id:0:12}"
  printf '%s\n' "$KB_IMAGE_REPO:$tag-${id:0:12}"
}

# kb_image_size IMAGE: its uncompressed size, as podman reports it.
kb_image_size() { podman image inspect --format '{{.Size}}' "$1" | awk '{ printf "%.1f MiB\n", $1 / 1048576 }'; }
