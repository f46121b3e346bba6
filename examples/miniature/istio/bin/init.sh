#!/bin/bash
# Miniature of istio's bin/init.sh: find the envoy that istio ships and copy it
# to $ISTIO_OUT/envoy. The real script downloads envoy (and wasm plugins) from
# istio's release bucket; the example has nothing to download, so it needs a
# local build: make USE_LOCAL_PROXY=1 ... with the proxy checked out in ../proxy.
set -o errexit
set -o nounset
set -o pipefail

ROOTDIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ISTIO_GO=${ISTIO_GO:-${ROOTDIR}}
OUT_DIR=${OUT_DIR:-${ROOTDIR}/out}
ISTIO_OUT=${ISTIO_OUT:-${OUT_DIR}/linux_amd64}
# istio and deps binaries: $GOPATH/bin unless the Makefile says (istio 1.4.x).
GOPATH=${GOPATH:-$(cd "${ROOTDIR}/../../.." && pwd)}
ISTIO_BIN=${ISTIO_BIN:-${GOPATH}/bin}
export GOARCH=${GOARCH:-'amd64'}

# Envoy Linux vars. Normally set by the Makefile.
ISTIO_ENVOY_LINUX_RELEASE_DIR=${ISTIO_ENVOY_LINUX_RELEASE_DIR:-"${OUT_DIR}/linux_amd64/release"}
ISTIO_ENVOY_LINUX_RELEASE_PATH=${ISTIO_ENVOY_LINUX_RELEASE_PATH:-"${ISTIO_ENVOY_LINUX_RELEASE_DIR}/envoy"}

# Allow override with a local build of Envoy
USE_LOCAL_PROXY=${USE_LOCAL_PROXY:-0}
if [[ ${USE_LOCAL_PROXY} == 1 ]] ; then
  ISTIO_ENVOY_LOCAL_PATH=${ISTIO_ENVOY_LOCAL_PATH:-$(realpath -m "${ISTIO_GO}/../proxy/bazel-bin/src/envoy/envoy")}
  echo "Using istio-proxy image from local workspace: ${ISTIO_ENVOY_LOCAL_PATH}"
  if [[ ! -f "${ISTIO_ENVOY_LOCAL_PATH}" ]]; then
    echo "Error: missing istio-proxy from local workspace: ${ISTIO_ENVOY_LOCAL_PATH}. Check your build path."
    exit 1
  fi
  ISTIO_ENVOY_LINUX_RELEASE_PATH=${ISTIO_ENVOY_LOCAL_PATH}
fi

if [[ ! -f "${ISTIO_ENVOY_LINUX_RELEASE_PATH}" ]]; then
  echo "Error: no envoy at ${ISTIO_ENVOY_LINUX_RELEASE_PATH}, and the example cannot download one: build ../proxy and set USE_LOCAL_PROXY=1."
  exit 1
fi

# Copy native envoy binary to ISTIO_OUT
mkdir -p "${ISTIO_OUT}"
echo "Copying ${ISTIO_ENVOY_LINUX_RELEASE_PATH} to ${ISTIO_OUT}/envoy"
cp -f "${ISTIO_ENVOY_LINUX_RELEASE_PATH}" "${ISTIO_OUT}/envoy"

# Like istio 1.4.x, also next to the other istio binaries in ISTIO_BIN.
mkdir -p "${ISTIO_BIN}"
echo "Copying ${ISTIO_OUT}/envoy to ${ISTIO_BIN}/envoy"
cp -f "${ISTIO_OUT}/envoy" "${ISTIO_BIN}/envoy"
