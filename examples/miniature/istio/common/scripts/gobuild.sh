#!/bin/bash
# Miniature of istio's common/scripts/gobuild.sh:
#   gobuild.sh OUT_DIR/ PACKAGE... builds static Go binaries for $GOOS/$GOARCH,
# version-stamped with -X ldflags from the BUILDINFO file (lines of
# pkg.var=value); without one, report_build_info.sh makes it from git.
set -e

SCRIPTPATH="$( cd "$( dirname "${BASH_SOURCE[0]}" )" && pwd )"

OUT=${1:?"output path"}
shift

BUILD_GOOS=${GOOS:-linux}
BUILD_GOARCH=${GOARCH:-amd64}
GOBINARY=${GOBINARY:-go}
GOPKG="$GOPATH/pkg"
BUILDINFO=${BUILDINFO:-""}
STATIC=${STATIC:-1}
LDFLAGS=${LDFLAGS:--extldflags -static}
export CGO_ENABLED=0

if [[ "${STATIC}" != "1" ]]; then
    LDFLAGS=""
fi

# gather buildinfo if not already provided
# For a release build BUILDINFO should be produced
# at the beginning of the build and used throughout
if [[ -z ${BUILDINFO} ]]; then
    BUILDINFO=$(mktemp)
    # (upstream runs the script directly; the miniature's copy is not executable)
    bash "${SCRIPTPATH}/report_build_info.sh" > "${BUILDINFO}"
fi

# BUILD LD_EXTRAFLAGS
LD_EXTRAFLAGS=""

while read -r line; do
    LD_EXTRAFLAGS="${LD_EXTRAFLAGS} -X ${line}"
done < "${BUILDINFO}"

mkdir -p "${OUT}"
GOOS=${BUILD_GOOS} GOARCH=${BUILD_GOARCH} ${GOBINARY} build -trimpath \
    -pkgdir="${GOPKG}/${BUILD_GOOS}_${BUILD_GOARCH}" \
    -ldflags "${LDFLAGS} ${LD_EXTRAFLAGS}" -o "${OUT}" "$@"
