#!/usr/bin/env bash
# Set up this machine for istiobuild and its tests, offline-capable and idempotent:
#   1. system packages through apt-get (as root, or with sudo): git, make, the toolchains (gcc,
#      clang/lld, the aarch64 cross compilers), bazel (Debian's bazel-bootstrap), gn, ninja, Go,
#      qemu-user-static;
#   2. binfmt_misc registration of qemu-aarch64 (flag F), so aarch64 binaries and arm64 containers
#      just run;
#   3. a docker engine (dockerd) and a local registry on 127.0.0.1:5000 (Debian's docker-registry),
#      and Debian's arm64 package index (the example's arm64 base image is a busybox-static rootfs);
#   4. the package itself with its test extras (pip install -e '.[test]').
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  git make ca-certificates file binutils curl
  gcc g++ clang lld libc++-dev libc++abi-dev
  gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu
  bazel-bootstrap default-jdk-headless generate-ninja ninja-build golang-go
  qemu-user-static binfmt-support
  docker.io docker-registry
  groovy shellcheck  # CI pipeline tests: the Jenkinsfile's Groovy syntax; actionlint's check of run: scripts
  nginx-light skopeo openssl
  go-bindata  # istio 1.5 and the example regenerate what istioctl embeds (make gen-charts)
  rustc cargo  # ztunnel (1.18+ lines, example-next) built with cargo from its pinned commit
)

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "ci/setup.sh: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Run aarch64 binaries transparently (qemu-user through binfmt_misc, flag F).
if [ "$(uname -m)" != aarch64 ]; then
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || echo "ci/setup.sh: cannot mount binfmt_misc" >&2
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    $SUDO update-binfmts --enable qemu-aarch64 || echo "ci/setup.sh: cannot register qemu-aarch64" >&2
  fi
fi

# arm64 packages (busybox-static for the example's arm64 base image, Rust's standard library for aarch64
# ztunnel cross builds) come from Debian's index.
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $SUDO dpkg --add-architecture arm64
  $SUDO apt-get update -qq
fi
if ! dpkg-query -W -f='${Status}' libstd-rust-dev:arm64 2>/dev/null | grep -q "install ok installed"; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends libstd-rust-dev:arm64 >/dev/null
fi

# A docker engine. No image can be pulled here: base images are imported from local rootfs tars.
if ! docker info >/dev/null 2>&1; then
  echo "ci/setup.sh: starting dockerd"
  $SUDO sh -c 'nohup dockerd >/var/log/istiobuild-dockerd.log 2>&1 &'
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "ci/setup.sh: dockerd did not start (see /var/log/istiobuild-dockerd.log)" >&2; exit 1; }
fi

# A local registry for `--push` and `invoke manifest` (tests start their own on free ports).
if ! (exec 3<>/dev/tcp/127.0.0.1/5000) 2>/dev/null; then
  mkdir -p /tmp/istiobuild-registry
  cat > /tmp/istiobuild-registry/config.yml <<'YAML'
version: 0.1
storage:
  filesystem:
    rootdirectory: /tmp/istiobuild-registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
YAML
  nohup docker-registry serve /tmp/istiobuild-registry/config.yml >/tmp/istiobuild-registry/log 2>&1 &
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
