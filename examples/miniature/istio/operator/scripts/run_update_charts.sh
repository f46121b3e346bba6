#!/bin/bash

# Miniature of istio 1.5's operator/scripts/run_update_charts.sh (`make gen-charts`): the charts and
# profiles istioctl embeds are generated into operator/pkg/vfs/assets.gen.go by go-bindata, the same way.

set -u
set -x
set -e

OUT_DIR=$(mktemp -d -t istio-charts.XXXXXXXXXX) || { echo "Failed to create temp file"; exit 1; }

SCRIPTPATH="$( cd "$( dirname "${BASH_SOURCE[0]}" )" && pwd )"
ROOTDIR="${SCRIPTPATH}/../.."

OPERATOR_DIR="${ROOTDIR}/operator"
INSTALLER_DIR="${ROOTDIR}/manifests"

cp -Rf "${OPERATOR_DIR}"/data/* "${OUT_DIR}/."

mkdir -p "${OUT_DIR}/charts"

for c in istio-control
do
    cp -Rf "${INSTALLER_DIR}/${c}" "${OUT_DIR}/charts"
done

cd "${OUT_DIR}"
go-bindata --nocompress --nometadata --pkg vfs -o "${OPERATOR_DIR}/pkg/vfs/assets.gen.go" ./...

rm -Rf "${OUT_DIR}"
