# istiobuild builder: a current Debian 12 (bookworm) toolchain.
#
#   clang 14 + lld + libc++/libc++abi, gcc 12, generate-ninja (gn), ninja, cmake, OpenJDK 17,
#   Go 1.13.4 (pinned tarball: istio 1.4.x/1.5.x go.mod says `go 1.13`), bazelisk 1.26.0,
#   make, git, patch, python3, autotools.
#
# For the `clang` and `gcc` toolchain profiles (any clang >= 9 / gcc >= 7.3); the guide's exact
# compilers (`clang-9`, `gcc-7.3`) are in builder-centos7. bazelisk downloads the bazel a
# workspace asks for (.bazelversion / USE_BAZEL_VERSION) from the official releases, which have
# no linux-arm64 binaries before 3.4.0: on arm64 this image cannot run bazel 1.1.0 / 2.0.0 for
# istio-proxy 1.4.x / 1.5.x (use builder-centos7, or BAZELISK_BASE_URL; see README.md).
#
#   DOCKER_BUILDKIT=0 docker build --platform linux/arm64 -t istiobuild/builder-modern:arm64 \
#       -f dockerfiles/builder-modern.Dockerfile dockerfiles
#   DOCKER_BUILDKIT=0 docker build --platform linux/amd64 -t istiobuild/builder-modern:amd64 \
#       -f dockerfiles/builder-modern.Dockerfile dockerfiles
#
# Every download is pinned in dockerfiles/pins.toml and verified with sha256sum before use.

# debian:bookworm-20260803 manifest list (amd64, arm64/v8, ...), the same digest as debian:12 then.
ARG DEBIAN_IMAGE=debian:bookworm-20260803@sha256:813017f3d62be4b5891a7acca6a01bdcd4b8513daa81b1ab99d3a50385b26931
FROM ${DEBIAN_IMAGE}

LABEL org.opencontainers.image.title="istiobuild builder (Debian 12)" \
      org.opencontainers.image.description="clang/lld/libc++, gcc, gn, ninja, cmake, JDK, Go 1.13.4, bazelisk 1.26.0"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ARG DEBIAN_FRONTEND=noninteractive

RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends \
      ca-certificates curl git make patch file xz-utils zip unzip \
      python3 python-is-python3 \
      clang lld llvm libc++-dev libc++abi-dev \
      gcc g++ binutils \
      generate-ninja ninja-build cmake pkg-config \
      autoconf automake libtool \
      default-jdk-headless; \
    rm -rf /var/lib/apt/lists/*; \
    clang --version; \
    printf '#include <vector>\nint main() { std::vector<int> v{0}; return v[0]; }\n' > /tmp/libcxx-check.cc; \
    clang++ -stdlib=libc++ -fuse-ld=lld -pthread /tmp/libcxx-check.cc -o /tmp/libcxx-check; \
    /tmp/libcxx-check; \
    rm -f /tmp/libcxx-check /tmp/libcxx-check.cc

ENV PATH=/usr/local/go/bin:/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    GOPATH=/go \
    GN=/usr/bin/gn \
    NINJA=/usr/bin/ninja

# Go 1.13.4 (official tarball; Debian 12's golang-go is 1.19).
ARG GO_VERSION=1.13.4
ARG GO_URL_AMD64=https://dl.google.com/go/go1.13.4.linux-amd64.tar.gz
ARG GO_SHA256_AMD64=692d17071736f74be04a72a06dab9cac1cd759377bd85316e52b2227604c004c
ARG GO_URL_ARM64=https://dl.google.com/go/go1.13.4.linux-arm64.tar.gz
ARG GO_SHA256_ARM64=8b8d99eb07206f082468fb4d0ec962a819ae45d54065fc1ed6e2c502e774aaf0
RUN set -eux; \
    case "$(uname -m)" in \
      x86_64) url="${GO_URL_AMD64}"; sha256="${GO_SHA256_AMD64}";; \
      aarch64) url="${GO_URL_ARM64}"; sha256="${GO_SHA256_ARM64}";; \
      *) echo "unsupported architecture $(uname -m)" >&2; exit 1;; \
    esac; \
    curl -fsSL --retry 3 -o /tmp/go.tar.gz "${url}"; \
    echo "${sha256}  /tmp/go.tar.gz" | sha256sum -c -; \
    tar -C /usr/local -xzf /tmp/go.tar.gz; \
    rm -f /tmp/go.tar.gz; \
    mkdir -p /go/bin; \
    go version | grep -F "go${GO_VERSION} "

# bazelisk, installed as `bazel` too.
ARG BAZELISK_VERSION=1.26.0
ARG BAZELISK_URL_AMD64=https://github.com/bazelbuild/bazelisk/releases/download/v1.26.0/bazelisk-linux-amd64
ARG BAZELISK_SHA256_AMD64=6539c12842ad76966f3d493e8f80d67caa84ec4a000e220d5459833c967c12bc
ARG BAZELISK_URL_ARM64=https://github.com/bazelbuild/bazelisk/releases/download/v1.26.0/bazelisk-linux-arm64
ARG BAZELISK_SHA256_ARM64=54f85ef4c23393f835252cc882e5fea596e8ef3c4c2056b059f8067cd19f0351
RUN set -eux; \
    case "$(uname -m)" in \
      x86_64) url="${BAZELISK_URL_AMD64}"; sha256="${BAZELISK_SHA256_AMD64}";; \
      aarch64) url="${BAZELISK_URL_ARM64}"; sha256="${BAZELISK_SHA256_ARM64}";; \
      *) echo "unsupported architecture $(uname -m)" >&2; exit 1;; \
    esac; \
    curl -fsSL --retry 3 -o /tmp/bazelisk "${url}"; \
    echo "${sha256}  /tmp/bazelisk" | sha256sum -c -; \
    install -m 0755 /tmp/bazelisk /usr/local/bin/bazelisk; \
    ln -s bazelisk /usr/local/bin/bazel; \
    rm -f /tmp/bazelisk

# What the image has, in the build log.
RUN set -eux; \
    clang --version; \
    gcc --version; \
    gn --version; \
    ninja --version; \
    cmake --version; \
    go version; \
    java -version; \
    git --version; \
    make --version; \
    python --version

WORKDIR /work
CMD ["/bin/bash"]
