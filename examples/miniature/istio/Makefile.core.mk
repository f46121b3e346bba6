# Miniature of istio's Makefile.core.mk.
SHELL := /bin/bash

ISTIO_GO := $(shell dirname $(realpath $(lastword $(MAKEFILE_LIST))))
export ISTIO_GO

# What the images report as their version (the istio_version build arg, see
# tools/istio-docker.mk); a release build sets VERSION.
VERSION ?= 0.1-dev

# If GOPATH is not set by the env, set it to a sane value: for a checkout in
# <somewhere>/<release>/istio that is <somewhere>/.. (the module cache, -pkgdir
# and ISTIO_BIN then land there).
GOPATH ?= $(shell cd ${ISTIO_GO}/../../..; pwd)
export GOPATH

# If GOPATH is made up of several paths, use the first one for our targets in this Makefile
GO_TOP := $(shell echo ${GOPATH} | cut -d ':' -f1)
export GO_TOP

# As in istio 1.4.x: GOARCH_LOCAL is this machine's arch (`uname -m`), whatever
# TARGET_ARCH says.
LOCAL_ARCH := $(shell uname -m)
ifeq ($(LOCAL_ARCH),x86_64)
GOARCH_LOCAL := amd64
else ifeq ($(shell echo $(LOCAL_ARCH) | head -c 5),armv8)
GOARCH_LOCAL := arm64
else ifeq ($(shell echo $(LOCAL_ARCH) | head -c 4),armv)
GOARCH_LOCAL := arm
else
GOARCH_LOCAL := $(LOCAL_ARCH)
endif
export GOARCH ?= $(GOARCH_LOCAL)
GOOS_LOCAL := $(TARGET_OS)

# istio and deps binaries (istio 1.4.x: $(GO_TOP)/bin).
export ISTIO_BIN=$(GO_TOP)/bin
export ISTIO_OUT:=$(TARGET_OUT)
export ISTIO_OUT_LINUX:=$(TARGET_OUT_LINUX)

# The proxy commit this istio is tested with.
export PROXY_REPO_SHA:=$(shell grep PROXY_REPO_SHA istio.deps -A 4 | grep lastStableSHA | cut -f 4 -d '"')

export ISTIO_ENVOY_LINUX_RELEASE_DIR ?= $(TARGET_OUT_LINUX)/release
export ISTIO_ENVOY_LINUX_RELEASE_PATH ?= $(ISTIO_ENVOY_LINUX_RELEASE_DIR)/envoy-$(PROXY_REPO_SHA)

# Allow user-override for a local Envoy build.
export USE_LOCAL_PROXY ?= 0
ifeq ($(USE_LOCAL_PROXY),1)
  export ISTIO_ENVOY_LOCAL ?= $(realpath ${ISTIO_GO}/../proxy/bazel-bin/src/envoy/envoy)
  # Point the native paths to the local envoy build.
  export ISTIO_ENVOY_LINUX_RELEASE_DIR = $(dir ${ISTIO_ENVOY_LOCAL})
  export ISTIO_ENVOY_LINUX_RELEASE_PATH = ${ISTIO_ENVOY_LOCAL}
endif

BINARIES := ./istioctl/cmd/istioctl ./pilot/cmd/pilot-discovery ./pilot/cmd/pilot-agent

.PHONY: init depend build build-linux gen-charts

# $(sort) names the directory once when both are the same (out/linux_<arch>).
$(sort $(ISTIO_OUT) $(ISTIO_OUT_LINUX)):
	@mkdir -p $@

init: $(ISTIO_OUT)/istio_is_init

# init.sh finds the envoy the images carry; it runs once per output directory.
$(ISTIO_OUT)/istio_is_init: bin/init.sh istio.deps | $(ISTIO_OUT)
	ISTIO_OUT=$(ISTIO_OUT) ISTIO_BIN=$(ISTIO_BIN) bin/init.sh
	touch $@

depend: init | $(TARGET_OUT)

build: depend
	STATIC=0 GOOS=$(GOOS_LOCAL) GOARCH=$(GOARCH) LDFLAGS='-extldflags -static -s -w' common/scripts/gobuild.sh $(ISTIO_OUT)/ $(BINARIES)

# The build-linux target builds the binaries that go into the docker images.
build-linux: depend
	STATIC=0 GOOS=linux GOARCH=amd64 LDFLAGS='-extldflags -static -s -w' common/scripts/gobuild.sh $(ISTIO_OUT_LINUX)/ $(BINARIES)

# Rules for $(ISTIO_OUT_LINUX)/<binary>: all at once, or one by one with BUILD_ALL=false.
BUILD_ALL ?= true
define build-linux
.PHONY: $(ISTIO_OUT_LINUX)/$(shell basename $(1))
ifeq ($(BUILD_ALL),true)
$(ISTIO_OUT_LINUX)/$(shell basename $(1)): build-linux
else
$(ISTIO_OUT_LINUX)/$(shell basename $(1)): $(ISTIO_OUT_LINUX)
	STATIC=0 GOOS=linux GOARCH=amd64 LDFLAGS='-extldflags -static -s -w' common/scripts/gobuild.sh $(ISTIO_OUT_LINUX)/ $(1)
endif
endef

$(foreach bin,$(BINARIES),$(eval $(call build-linux,$(bin))))

# The charts and profiles istioctl embeds (operator/pkg/vfs/assets.gen.go), regenerated from
# operator/data and manifests/ (as in istio 1.5: operator/scripts/run_update_charts.sh).
gen-charts:
	@operator/scripts/run_update_charts.sh

include tools/istio-docker.mk
