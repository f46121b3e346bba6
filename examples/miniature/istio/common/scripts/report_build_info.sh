#!/bin/bash
# Miniature of istio's common/scripts/report_build_info.sh: the build info
# gobuild.sh stamps into the binaries when no BUILDINFO file is given, from git.

# The commit, "-dirty" when the working tree has any change (a patched checkout).
if BUILD_GIT_REVISION=$(git rev-parse HEAD 2> /dev/null); then
  if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then
    BUILD_GIT_REVISION=${BUILD_GIT_REVISION}"-dirty"
  fi
else
  BUILD_GIT_REVISION=unknown
fi

# Check for local changes
if git diff-index --quiet HEAD --; then
  tree_status="Clean"
else
  tree_status="Modified"
fi

# The version is the revision unless ISTIO_VERSION says otherwise.
VERSION="${BUILD_GIT_REVISION}"
if [[ -n ${ISTIO_VERSION} ]]; then
  VERSION="${ISTIO_VERSION}"
fi

# Empty in a checkout without tags (fetched by SHA).
GIT_DESCRIBE_TAG=$(git describe --tags)
HUB=${HUB:-"docker.io/istio"}

# used by common/scripts/gobuild.sh
echo "@VERSION_PKG@.buildVersion=${VERSION}"
echo "@VERSION_PKG@.buildGitRevision=${BUILD_GIT_REVISION}"
echo "@VERSION_PKG@.buildStatus=${tree_status}"
echo "@VERSION_PKG@.buildTag=${GIT_DESCRIBE_TAG}"
echo "@VERSION_PKG@.buildHub=${HUB}"
