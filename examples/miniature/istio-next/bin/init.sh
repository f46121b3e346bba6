#!/bin/bash
# Miniature of istio's bin/init.sh as in 1.22: download envoy for TARGET_ARCH (the release bucket's
# envoy-alpha-<sha>-<arch>.tar.gz; no suffix for amd64) into
# $TARGET_OUT_LINUX/release/envoy-<PROXY_REPO_SHA> unless that file is already there, copy it to
# release/envoy only after a download, then to $TARGET_OUT/envoy. There is no knob for a local envoy:
# it must be pre-placed. Offline, the download fails (as the real one does).
set -o errexit
set -o nounset
set -o pipefail

if [[ "${TARGET_OUT_LINUX:-}" == "" ]]; then
  echo "Environment variables not set. Make sure you run through the makefile (\`make init\`) rather than directly."
  exit 1
fi

if [[ "${TARGET_ARCH:-amd64}" == "amd64" ]]; then
  ISTIO_ENVOY_ARCH_SUFFIX=""
else
  ISTIO_ENVOY_ARCH_SUFFIX="-${TARGET_ARCH}"
fi

SIDECAR="${SIDECAR:-envoy}"
ISTIO_ENVOY_BASE_URL="${ISTIO_ENVOY_BASE_URL:-https://storage.googleapis.com/istio-build/proxy}"
if [[ "${ISTIO_ENVOY_BASE_URL}" != "https://storage.googleapis.com/istio-build/proxy" ]]; then
  AUTH_HEADER="Authorization: Bearer $(gcloud auth print-access-token)"
fi
ISTIO_ENVOY_VERSION="${ISTIO_ENVOY_VERSION:-${PROXY_REPO_SHA}}"
ISTIO_ENVOY_RELEASE_URL="${ISTIO_ENVOY_RELEASE_URL:-${ISTIO_ENVOY_BASE_URL}/envoy-alpha-${ISTIO_ENVOY_VERSION}${ISTIO_ENVOY_ARCH_SUFFIX}.tar.gz}"
ISTIO_ENVOY_LINUX_RELEASE_URL="${ISTIO_ENVOY_LINUX_RELEASE_URL:-${ISTIO_ENVOY_RELEASE_URL}}"
ISTIO_ENVOY_LINUX_RELEASE_DIR="${ISTIO_ENVOY_LINUX_RELEASE_DIR:-${TARGET_OUT_LINUX}/release}"
ISTIO_ENVOY_LINUX_RELEASE_PATH="${ISTIO_ENVOY_LINUX_RELEASE_PATH:-${ISTIO_ENVOY_LINUX_RELEASE_DIR}/${SIDECAR}-${ISTIO_ENVOY_VERSION}}"

# download_envoy_if_necessary URL PATH NAME
function download_envoy_if_necessary () {
  if [[ ! -f "$2" ]] ; then
    mkdir -p "$(dirname "$2")"
    echo "Downloading ${SIDECAR}: $1 to $2"
    curl -fLSs --header "${AUTH_HEADER:-}" "$1" | tar xz -O > "$2"
    chmod u+x "$2"
    echo "Copying $2 to $(dirname "$2")/${3}"
    cp -f "$2" "$(dirname "$2")/${3}"
  fi
}

download_envoy_if_necessary "${ISTIO_ENVOY_LINUX_RELEASE_URL}" "${ISTIO_ENVOY_LINUX_RELEASE_PATH}" "${SIDECAR}"

mkdir -p "${TARGET_OUT}"
echo "Copying ${ISTIO_ENVOY_LINUX_RELEASE_PATH} to ${TARGET_OUT}/${SIDECAR}"
cp -f "${ISTIO_ENVOY_LINUX_RELEASE_PATH}" "${TARGET_OUT}/${SIDECAR}"
