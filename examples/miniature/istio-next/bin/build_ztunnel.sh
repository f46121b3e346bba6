#!/bin/bash
# Miniature of istio's bin/build_ztunnel.sh as in 1.22: with BUILD_ZTUNNEL_REPO, build ztunnel
# there with cargo (--target=BUILD_ZTUNNEL_TARGET) and copy it to $TARGET_OUT_LINUX/ztunnel; then,
# either way, download ztunnel-<ZTUNNEL_REPO_SHA>-<TARGET_ARCH> into
# $TARGET_OUT_LINUX/release/ztunnel-<sha> unless that file is there, and copy the download over
# $TARGET_OUT_LINUX/ztunnel. Offline, the download fails (as the real one does).
set -o errexit
set -o nounset
set -o pipefail

if [[ "${TARGET_OUT_LINUX:-}" == "" ]]; then
  echo "Environment variables not set. Make sure you run through the makefile (\`make init\`) rather than directly."
  exit 1
fi

function download_ztunnel_if_necessary () {
  if [[ -f "$2" ]]; then
    return
  fi
  mkdir -p "$(dirname "$2")"
  echo "Downloading ztunnel: $1 to $2"
  curl -fLSs --header "${AUTH_HEADER:-}" "$1" > "$2"
  chmod +x "$2"
  cp -f "$2" "$(dirname "$2")/${3}"
  echo "Copying '${2}' to ${TARGET_OUT_LINUX}/ztunnel"
  cp -f "${2}" "${TARGET_OUT_LINUX}/ztunnel"
}

function maybe_build_ztunnel() {
  if [[ "${BUILD_ZTUNNEL_REPO:-}" == "" ]]; then
    return
  fi
  pushd "${BUILD_ZTUNNEL_REPO}"
  cargo build --profile="${BUILD_ZTUNNEL_PROFILE:-dev}" ${BUILD_ZTUNNEL_TARGET:+--target=${BUILD_ZTUNNEL_TARGET}}
  local profile=debug
  if [[ "${BUILD_ZTUNNEL_PROFILE:-dev}" != "dev" ]]; then
    profile="${BUILD_ZTUNNEL_PROFILE}"
  fi
  mkdir -p "${TARGET_OUT_LINUX}"
  cp "out/rust/${BUILD_ZTUNNEL_TARGET:+${BUILD_ZTUNNEL_TARGET}/}${profile}/ztunnel" "${TARGET_OUT_LINUX}/ztunnel"
  popd
}

ISTIO_ZTUNNEL_BASE_URL="${ISTIO_ZTUNNEL_BASE_URL:-https://storage.googleapis.com/istio-build/ztunnel}"
if [[ "${ISTIO_ZTUNNEL_BASE_URL}" != "https://storage.googleapis.com/istio-build/ztunnel" ]]; then
  AUTH_HEADER="Authorization: Bearer $(gcloud auth print-access-token)"
  export AUTH_HEADER
fi

ZTUNNEL_REPO_SHA="${ZTUNNEL_REPO_SHA:-$(grep ZTUNNEL_REPO_SHA istio.deps -A 4 | grep lastStableSHA | cut -f 4 -d '"')}"
ISTIO_ZTUNNEL_VERSION="${ISTIO_ZTUNNEL_VERSION:-${ZTUNNEL_REPO_SHA}}"
ISTIO_ZTUNNEL_RELEASE_URL="${ISTIO_ZTUNNEL_RELEASE_URL:-${ISTIO_ZTUNNEL_BASE_URL}/ztunnel-${ISTIO_ZTUNNEL_VERSION}-${TARGET_ARCH}}"
ISTIO_ZTUNNEL_LINUX_RELEASE_DIR="${ISTIO_ZTUNNEL_LINUX_RELEASE_DIR:-${TARGET_OUT_LINUX}/release}"
ISTIO_ZTUNNEL_LINUX_RELEASE_PATH="${ISTIO_ZTUNNEL_LINUX_RELEASE_PATH:-${ISTIO_ZTUNNEL_LINUX_RELEASE_DIR}/ztunnel-${ISTIO_ZTUNNEL_VERSION}}"

maybe_build_ztunnel
download_ztunnel_if_necessary "${ISTIO_ZTUNNEL_RELEASE_URL}" "${ISTIO_ZTUNNEL_LINUX_RELEASE_PATH}" "ztunnel"
