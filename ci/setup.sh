#!/usr/bin/env bash
# Set up this machine for istiobuild and its tests: system packages (as root, through apt-get),
# then the package itself with its test extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests use for real (git for checkouts and patches, make for upstream Makefiles).
APT_PACKAGES=(git make ca-certificates)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
  else
    SUDO=
  fi
  echo "ci/setup.sh: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'
