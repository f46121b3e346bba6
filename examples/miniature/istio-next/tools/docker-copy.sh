#!/bin/bash
# Miniature of istio's tools/docker-copy.sh: docker-copy.sh FILE... DIR copies every FILE (or
# directory) into DIR, an ELF binary for amd64 or arm64 into DIR/<arch>/ (the Dockerfiles
# COPY ${TARGETARCH}/<name>), with modes that do not depend on the umask.
set -o errexit
set -o nounset
set -o pipefail

INPUTS=("${@}")
DOCKER_WORKING_DIR=${INPUTS[${#INPUTS[@]}-1]}
FILES=("${INPUTS[@]:0:${#INPUTS[@]}-1}")

function detect_arch() {
  local info
  info=$(file -b "${1}" || true)
  if [[ ${info} == *"ELF 64-bit LSB"* ]]; then
    case ${info} in
      *x86-64*) echo "amd64" ;;
      *aarch64*) echo "arm64" ;;
    esac
  fi
}

mkdir -p "${DOCKER_WORKING_DIR}"
for FILE in "${FILES[@]}"; do
  dst="${DOCKER_WORKING_DIR}"
  arch="$(detect_arch "${FILE}")"
  if [[ "${arch}" != "" ]]; then
    dst+="/${arch}"
  fi
  mkdir -p "${dst}"
  cp -rp "${FILE}" "${dst}/"
  out="${dst}/$(basename "${FILE}")"
  if [[ -d "${out}" ]]; then
    chmod -R a+r "${out}"
  elif [[ -x "${out}" ]]; then
    chmod 755 "${out}"
  else
    chmod a+r "${out}"
  fi
done
