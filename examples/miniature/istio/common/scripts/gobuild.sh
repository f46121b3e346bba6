#!/bin/bash
# Miniature of istio's common/scripts/gobuild.sh:
#   gobuild.sh OUT_DIR/ PACKAGE... builds static Go binaries for $GOOS/$GOARCH.
set -e

OUT=${1:?"output path"}
shift

BUILD_GOOS=${GOOS:-linux}
BUILD_GOARCH=${GOARCH:-amd64}
GOBINARY=${GOBINARY:-go}
STATIC=${STATIC:-1}
LDFLAGS=${LDFLAGS:--extldflags -static}
export CGO_ENABLED=0

if [[ "${STATIC}" != "1" ]]; then
    LDFLAGS=""
fi

mkdir -p "${OUT}"
GOOS=${BUILD_GOOS} GOARCH=${BUILD_GOARCH} ${GOBINARY} build -trimpath -ldflags "${LDFLAGS}" -o "${OUT}" "$@"
