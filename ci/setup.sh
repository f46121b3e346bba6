#!/usr/bin/env bash
# Set up this machine for istiobuild and its tests, offline-capable and idempotent:
#   1. system packages through apt-get (as root, or with sudo): git, make, the toolchains (gcc,
#      clang/lld, the aarch64 cross compilers), bazel (Debian's bazel-bootstrap), gn, ninja, Go,
#      qemu-user-static;
#   2. binfmt_misc registration of qemu-aarch64 (flag F), so aarch64 binaries just run;
#   3. the package itself with its test extras (pip install -e '.[test]').
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  git make ca-certificates file binutils
  gcc g++ clang lld libc++-dev libc++abi-dev
  gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu
  bazel-bootstrap default-jdk-headless generate-ninja ninja-build golang-go
  qemu-user-static binfmt-support
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

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
