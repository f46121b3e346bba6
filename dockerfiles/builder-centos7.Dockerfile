# istiobuild builder: the Kunpeng porting guide's environment, reproducibly.
#
#   CentOS 7 (glibc 2.17), GCC 7.3.1 (devtoolset-7), LLVM/clang 9.0.1 with libc++/libc++abi/lld
#   (built from source, as the guide did), cmake 3.18.2, ninja 1.10.1, gn (2020-03-23),
#   bazel 1.1.0 and 2.0.0 (bootstrapped from the -dist.zip), Go 1.13.4, OpenJDK 8,
#   make, git, patch, python 2 and 3, autotools.
#
# One Dockerfile for x86_64 and aarch64; the architecture is read with `uname -m` at build time,
# so it builds with the classic builder (no BuildKit-only features):
#
#   DOCKER_BUILDKIT=0 docker build --platform linux/arm64 -t istiobuild/builder-centos7:arm64 \
#       -f dockerfiles/builder-centos7.Dockerfile dockerfiles
#   DOCKER_BUILDKIT=0 docker build --platform linux/amd64 -t istiobuild/builder-centos7:amd64 \
#       -f dockerfiles/builder-centos7.Dockerfile dockerfiles
#
# Every download is pinned in dockerfiles/pins.toml (the ARG defaults below must equal it; the
# tests check) and verified with sha256sum (or, for gn, git rev-parse) before use. Building
# needs the internet. LLVM and two bazels are compiled: about an hour natively on a many-core
# server, many hours under qemu emulation.

# centos:7.9.2009 manifest list (amd64, arm64/v8, ...). centos:7.6.1810 has no arm64 image;
# the 7.x point releases share glibc 2.17 and gcc 4.8.5. See pins.toml [images.centos7].
ARG CENTOS_IMAGE=centos:7.9.2009@sha256:be65f488b7764ad3638f236b7b515b3678369a5124c47b8d32916d6487418ea4
FROM ${CENTOS_IMAGE}

LABEL org.opencontainers.image.title="istiobuild builder (CentOS 7, Kunpeng guide toolchain)" \
      org.opencontainers.image.description="gcc 7.3 (devtoolset-7), clang 9.0.1, bazel 1.1.0/2.0.0, gn, ninja 1.10.1, Go 1.13.4, JDK 8"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Parallel jobs for the source builds (empty: nproc).
ARG JOBS=

# CentOS 7 is end-of-life: its packages live on the vault (frozen, GPG-signed).
ARG CENTOS_VAULT=https://vault.centos.org
ARG CENTOS_RELEASE=7.9.2009

# System packages: base, updates and extras from the vault; devtoolset-7 (gcc 7.3.1) from the
# Software Collections "rh" repository (x86_64: <vault>/<release>/sclo, aarch64: <vault>/altarch/...).
RUN set -eux; \
    arch="$(uname -m)"; \
    case "${arch}" in \
      x86_64) tree="${CENTOS_VAULT}/${CENTOS_RELEASE}";; \
      aarch64) tree="${CENTOS_VAULT}/altarch/${CENTOS_RELEASE}";; \
      *) echo "unsupported architecture ${arch}" >&2; exit 1;; \
    esac; \
    keys=""; \
    for key in /etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-7*; do keys="${keys} file://${key}"; done; \
    rm -f /etc/yum.repos.d/*.repo; \
    for repo in os updates extras; do \
      printf '[vault-%s]\nname=CentOS %s %s (vault)\nbaseurl=%s/%s/$basearch/\ngpgcheck=1\nenabled=1\ngpgkey=%s\n\n' \
        "${repo}" "${CENTOS_RELEASE}" "${repo}" "${tree}" "${repo}" "${keys}"; \
    done > /etc/yum.repos.d/CentOS-Vault.repo; \
    yum -y install centos-release-scl-rh; \
    rm -f /etc/yum.repos.d/CentOS-SCLo-*.repo; \
    printf '[vault-sclo-rh]\nname=CentOS %s SCLo rh (vault)\nbaseurl=%s/sclo/$basearch/rh/\ngpgcheck=1\nenabled=1\ngpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-CentOS-SIG-SCLo\n' \
      "${CENTOS_RELEASE}" "${tree}" > /etc/yum.repos.d/CentOS-Vault-SCLo-rh.repo; \
    yum -y install --setopt=tsflags=nodocs \
      devtoolset-7-gcc devtoolset-7-gcc-c++ devtoolset-7-binutils devtoolset-7-libstdc++-devel \
      java-1.8.0-openjdk-devel \
      make git patch which file tar gzip bzip2 xz zip unzip curl ca-certificates \
      python python3 python-virtualenv \
      libtool automake autoconf pkgconfig perl \
      zlib-devel ncurses-devel openssl-devel; \
    yum clean all; \
    rm -rf /var/cache/yum; \
    ln -s /opt/rh/devtoolset-7/root/usr/bin/gcc /usr/local/bin/gcc-7; \
    ln -s /opt/rh/devtoolset-7/root/usr/bin/g++ /usr/local/bin/g++-7; \
    /usr/local/bin/gcc-7 --version | grep -F ' 7.3.'

# The guide's compiler environment (PATH, LD_LIBRARY_PATH, LIBRARY_PATH with /opt/llvm), with
# devtoolset-7 enabled the way `scl enable devtoolset-7` does it.
ENV PATH=/opt/llvm/bin:/opt/rh/devtoolset-7/root/usr/bin:/usr/local/go/bin:/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LD_LIBRARY_PATH=/opt/llvm/lib:/opt/rh/devtoolset-7/root/usr/lib64:/opt/rh/devtoolset-7/root/usr/lib \
    LIBRARY_PATH=/opt/llvm/lib \
    JAVA_HOME=/usr/lib/jvm/java-1.8.0-openjdk \
    GOPATH=/go \
    GN=/usr/local/bin/gn \
    NINJA=/usr/local/bin/ninja

# Go 1.13.4 (official tarball).
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

# CMake 3.18.2 from source (CentOS 7 has 2.8; LLVM 9 needs >= 3.4.3, -S/-B need >= 3.13).
ARG CMAKE_VERSION=3.18.2
ARG CMAKE_SRC_URL=https://github.com/Kitware/CMake/releases/download/v3.18.2/cmake-3.18.2.tar.gz
ARG CMAKE_SRC_SHA256=5d4e40fc775d3d828c72e5c45906b4d9b59003c9433ff1b36a1cb552bbd51d7e
RUN set -eux; \
    curl -fsSL --retry 3 -o /tmp/cmake.tar.gz "${CMAKE_SRC_URL}"; \
    echo "${CMAKE_SRC_SHA256}  /tmp/cmake.tar.gz" | sha256sum -c -; \
    mkdir /tmp/cmake; \
    tar -C /tmp/cmake --strip-components=1 -xzf /tmp/cmake.tar.gz; \
    cd /tmp/cmake; \
    CC=gcc CXX=g++ ./bootstrap --prefix=/usr/local --parallel="${JOBS:-$(nproc)}" -- -DCMAKE_BUILD_TYPE=Release; \
    make -j"${JOBS:-$(nproc)}"; \
    make install; \
    cd /; \
    rm -rf /tmp/cmake /tmp/cmake.tar.gz; \
    cmake --version | grep -F "cmake version ${CMAKE_VERSION}"

# ninja 1.10.1 (the guide: `./configure.py --bootstrap`).
ARG NINJA_VERSION=1.10.1
ARG NINJA_SRC_URL=https://github.com/ninja-build/ninja/archive/v1.10.1.tar.gz
ARG NINJA_SRC_SHA256=a6b6f7ac360d4aabd54e299cc1d8fa7b234cd81b9401693da21221c62569a23e
RUN set -eux; \
    curl -fsSL --retry 3 -o /tmp/ninja.tar.gz "${NINJA_SRC_URL}"; \
    echo "${NINJA_SRC_SHA256}  /tmp/ninja.tar.gz" | sha256sum -c -; \
    mkdir /tmp/ninja; \
    tar -C /tmp/ninja --strip-components=1 -xzf /tmp/ninja.tar.gz; \
    cd /tmp/ninja; \
    CXX=g++ python3 ./configure.py --bootstrap; \
    install -m 0755 ninja /usr/local/bin/ninja; \
    cd /; \
    rm -rf /tmp/ninja /tmp/ninja.tar.gz; \
    test "$(ninja --version)" = "${NINJA_VERSION}"

# LLVM/clang 9.0.1 with compiler-rt, libc++, libc++abi and lld, built with gcc 7.3 like the guide
# (it used LLVM_TARGETS_TO_BUILD="host;AArch64"; both images here target X86 and AArch64, so the
# x86_64 image can cross-compile for aarch64). The release tarballs are not used: they need a
# newer libstdc++ than CentOS 7's (GLIBCXX_3.4.20+). Set WITH_LLVM=0 for a gcc-only image.
# clang uses devtoolset-7's gcc installation (crt files, libstdc++ 7) when not using libc++.
ARG WITH_LLVM=1
ARG LLVM_VERSION=9.0.1
ARG LLVM_SRC_URL=https://github.com/llvm/llvm-project/releases/download/llvmorg-9.0.1/llvm-project-9.0.1.tar.xz
ARG LLVM_SRC_SHA256=ea241c807e949c24615691a5271e20bcaaa404b28a5f6deb462f9c22b478489b
RUN set -eux; \
    if [ "${WITH_LLVM}" != 1 ]; then echo "WITH_LLVM=${WITH_LLVM}: no clang in this image"; exit 0; fi; \
    curl -fsSL --retry 3 -o /tmp/llvm-project.tar.xz "${LLVM_SRC_URL}"; \
    echo "${LLVM_SRC_SHA256}  /tmp/llvm-project.tar.xz" | sha256sum -c -; \
    mkdir /tmp/llvm-src; \
    tar -C /tmp/llvm-src --strip-components=1 -xJf /tmp/llvm-project.tar.xz; \
    rm -f /tmp/llvm-project.tar.xz; \
    CC=gcc CXX=g++ cmake -G Ninja -S /tmp/llvm-src/llvm -B /tmp/llvm-build \
      -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_INSTALL_PREFIX=/opt/llvm \
      -DLLVM_ENABLE_PROJECTS="clang;compiler-rt;libcxx;libcxxabi;lld" \
      -DLLVM_TARGETS_TO_BUILD="X86;AArch64" \
      -DLLVM_ENABLE_ASSERTIONS=OFF \
      -DLLVM_INCLUDE_TESTS=OFF \
      -DLLVM_INCLUDE_EXAMPLES=OFF \
      -DLLVM_INCLUDE_BENCHMARKS=OFF \
      -DLLVM_INCLUDE_DOCS=OFF \
      -DLLVM_PARALLEL_LINK_JOBS=2 \
      -DGCC_INSTALL_PREFIX=/opt/rh/devtoolset-7/root/usr \
      -DPYTHON_EXECUTABLE=/usr/bin/python; \
    ninja -C /tmp/llvm-build -j"${JOBS:-$(nproc)}" install; \
    rm -rf /tmp/llvm-src /tmp/llvm-build; \
    cd /opt/llvm/bin; \
    ln -s clang++ clang++-9; \
    ln -s llvm-ar llvm-ar-9; \
    ln -s llvm-nm llvm-nm-9; \
    ln -s ld.lld ld.lld-9; \
    clang-9 --version | grep -F "clang version ${LLVM_VERSION}"; \
    printf '#include <vector>\nint main() { std::vector<int> v{0}; return v[0]; }\n' > /tmp/libcxx-check.cc; \
    clang++-9 -stdlib=libc++ -fuse-ld=lld -pthread /tmp/libcxx-check.cc -o /tmp/libcxx-check; \
    /tmp/libcxx-check; \
    rm -f /tmp/libcxx-check /tmp/libcxx-check.cc

# gn (the guide built github.com/timniederhausen/gn branch 2020.03: `python build/gen.py; ninja -C out`).
# No deterministic gn tarball exists, so this is a clone checked out at a pinned commit.
# gen.py is asked not to link libstdc++ statically where it has that option (the binary only runs
# in this image); older gen.py versions do not know the option and get the default.
ARG GN_REPO=https://gn.googlesource.com/gn
ARG GN_COMMIT=5ed3c9cc67b090d5e311e4bd2aba072173e82db9
RUN set -eux; \
    git clone -q "${GN_REPO}" /tmp/gn; \
    cd /tmp/gn; \
    git checkout -q "${GN_COMMIT}"; \
    test "$(git rev-parse HEAD)" = "${GN_COMMIT}"; \
    if command -v clang++ >/dev/null; then export CC=clang CXX=clang++; else export CC=gcc CXX=g++; fi; \
    AR=ar python3 build/gen.py --no-static-libstdc++ || AR=ar python3 build/gen.py; \
    ninja -C out gn; \
    install -m 0755 out/gn /usr/local/bin/gn; \
    cd /; \
    rm -rf /tmp/gn; \
    gn --version

# Bazel for both release lines (releases/1.4.toml: 1.1.0, releases/1.5.toml: 2.0.0), bootstrapped
# from the -dist.zip as the guide did (`env EXTRA_BAZEL_ARGS="--host_javabase=@local_jdk//:jdk"
# bash ./compile.sh`); there are no official arm64 bazel binaries before 3.4.0. BAZEL_LINKLIBS /
# BAZEL_LINKOPTS as spack's bazel package sets them: link libstdc++ dynamically (devtoolset-7's
# libstdc++ is a linker script over the system one). /usr/local/bin/bazel runs the version the
# workspace asks for: $USE_BAZEL_VERSION, else the nearest .bazelversion, else BAZEL_DEFAULT_VERSION.
ARG BAZEL_VERSIONS="1.1.0 2.0.0"
ARG BAZEL_DEFAULT_VERSION=2.0.0
ARG BAZEL_DIST_1_1_0_URL=https://github.com/bazelbuild/bazel/releases/download/1.1.0/bazel-1.1.0-dist.zip
ARG BAZEL_DIST_1_1_0_SHA256=4b66a8c93af7832ed32e7236cf454a05f3aa06d25a8576fc3f83114f142f95ab
ARG BAZEL_DIST_2_0_0_URL=https://github.com/bazelbuild/bazel/releases/download/2.0.0/bazel-2.0.0-dist.zip
ARG BAZEL_DIST_2_0_0_SHA256=724da3c656f68e787a86ebb9844773aa1c2e3a873cc39462a8f1b336153d6cbb
RUN set -eux; \
    mkdir -p /usr/local/lib/bazel/bin; \
    for v in ${BAZEL_VERSIONS}; do \
      key="$(echo "${v}" | tr . _)"; \
      url_var="BAZEL_DIST_${key}_URL"; \
      sha256_var="BAZEL_DIST_${key}_SHA256"; \
      url="${!url_var:-}"; \
      sha256="${!sha256_var:-}"; \
      if [ -z "${url}" ] || [ -z "${sha256}" ]; then echo "bazel ${v}: no pinned -dist.zip (see dockerfiles/pins.toml)" >&2; exit 1; fi; \
      curl -fsSL --retry 3 -o /tmp/bazel-dist.zip "${url}"; \
      echo "${sha256}  /tmp/bazel-dist.zip" | sha256sum -c -; \
      mkdir /tmp/bazel-src; \
      cd /tmp/bazel-src; \
      unzip -q /tmp/bazel-dist.zip; \
      env EXTRA_BAZEL_ARGS="--host_javabase=@local_jdk//:jdk" BAZEL_LINKLIBS=-lstdc++ BAZEL_LINKOPTS= CC=gcc CXX=g++ \
        bash ./compile.sh; \
      install -m 0755 output/bazel "/usr/local/lib/bazel/bin/bazel-${v}"; \
      cd /; \
      rm -rf /tmp/bazel-src /tmp/bazel-dist.zip /root/.cache/bazel; \
      "/usr/local/lib/bazel/bin/bazel-${v}" --version | grep -F "bazel ${v}"; \
    done; \
    printf '%s\n' \
      '#!/bin/sh' \
      '# istiobuild builder image: run the bazel the workspace asks for.' \
      'v="${USE_BAZEL_VERSION:-}"' \
      'd="$PWD"' \
      'while [ -z "$v" ] && [ -n "$d" ]; do' \
      '  if [ -f "$d/.bazelversion" ]; then v="$(head -n1 "$d/.bazelversion" | tr -d "[:space:]")"; fi' \
      '  if [ "$d" = / ]; then break; fi' \
      '  d="$(dirname "$d")"' \
      'done' \
      "v=\"\${v:-${BAZEL_DEFAULT_VERSION}}\"" \
      'exe="/usr/local/lib/bazel/bin/bazel-$v"' \
      'if [ ! -x "$exe" ]; then' \
      '  echo "bazel $v is not installed in this image; installed: $(ls /usr/local/lib/bazel/bin | tr "\n" " ")" >&2' \
      '  exit 1' \
      'fi' \
      'exec "$exe" "$@"' > /usr/local/bin/bazel; \
    chmod 0755 /usr/local/bin/bazel; \
    cd /tmp; \
    USE_BAZEL_VERSION="${BAZEL_DEFAULT_VERSION}" bazel --version | grep -F "bazel ${BAZEL_DEFAULT_VERSION}"

# What the image has, in the build log.
RUN set -eux; \
    gcc --version; \
    gcc-7 --version; \
    if command -v clang-9 >/dev/null; then clang-9 --version; fi; \
    cmake --version; \
    ninja --version; \
    gn --version; \
    go version; \
    java -version; \
    ls /usr/local/lib/bazel/bin; \
    git --version; \
    make --version; \
    patch --version; \
    python --version; \
    python3 --version

WORKDIR /work
CMD ["/bin/bash"]
