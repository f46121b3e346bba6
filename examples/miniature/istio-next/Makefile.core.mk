# Miniature of istio's Makefile.core.mk as in 1.22: no USE_LOCAL_PROXY and no ISTIO_ENVOY_LOCAL any
# more. `init` runs bin/init.sh, which downloads envoy for TARGET_ARCH unless
# $(TARGET_OUT_LINUX)/release/envoy-$(PROXY_REPO_SHA) is there, and bin/build_ztunnel.sh, which does
# the same for ztunnel. Every Go binary is built for GOARCH_LOCAL = TARGET_ARCH.
SHELL := /bin/bash

ISTIO_GO := $(shell dirname $(realpath $(lastword $(MAKEFILE_LIST))))
export ISTIO_GO

# What the images report as their version (docker-builder reads `VERSION ?=` or $VERSION).
VERSION ?= 0.1-dev

# The base image every istio image starts FROM: $(ISTIO_BASE_REGISTRY)/base:$(BASE_VERSION)
# (docker-builder reads both lines).
BASE_VERSION ?= example-0.1
ISTIO_BASE_REGISTRY ?= gcr.io/istio-release

GOPATH ?= $(shell cd ${ISTIO_GO}/../../..; pwd)
export GOPATH
GO_TOP := $(shell echo ${GOPATH} | cut -d ':' -f1)
export GO_TOP

GOARCH_LOCAL := $(TARGET_ARCH)
GOOS_LOCAL := $(TARGET_OS)

export ISTIO_BIN=$(GO_TOP)/bin

# The proxy commit this istio is tested with.
export PROXY_REPO_SHA:=$(shell grep PROXY_REPO_SHA istio.deps -A 4 | grep lastStableSHA | cut -f 4 -d '"')

BINARIES := ./istioctl/cmd/istioctl ./pilot/cmd/pilot-discovery ./pilot/cmd/pilot-agent

.PHONY: init init-ztunnel-rs depend build build-linux gen-charts

$(sort $(TARGET_OUT) $(TARGET_OUT_LINUX)):
	@mkdir -p $@

init: $(TARGET_OUT)/istio_is_init init-ztunnel-rs

$(TARGET_OUT)/istio_is_init: bin/init.sh istio.deps | $(TARGET_OUT)
	TARGET_OUT=$(TARGET_OUT) ISTIO_BIN=$(ISTIO_BIN) bin/init.sh
	touch $(TARGET_OUT)/istio_is_init

init-ztunnel-rs:
	TARGET_OUT=$(TARGET_OUT) bin/build_ztunnel.sh

depend: init | $(TARGET_OUT)

build: depend
	STATIC=0 GOOS=$(GOOS_LOCAL) GOARCH=$(GOARCH_LOCAL) LDFLAGS='-extldflags -static -s -w' common/scripts/gobuild.sh $(TARGET_OUT)/ $(BINARIES)

build-linux: depend
	STATIC=0 GOOS=linux GOARCH=$(GOARCH_LOCAL) LDFLAGS='-extldflags -static -s -w' common/scripts/gobuild.sh $(TARGET_OUT_LINUX)/ $(BINARIES)

# Rules for $(TARGET_OUT_LINUX)/<binary> (the targets of tools/docker.yaml): all at once, or one by
# one with BUILD_ALL=false.
BUILD_ALL ?= true
define build-linux
.PHONY: $(TARGET_OUT_LINUX)/$(shell basename $(1))
ifeq ($(BUILD_ALL),true)
$(TARGET_OUT_LINUX)/$(shell basename $(1)): build-linux
else
$(TARGET_OUT_LINUX)/$(shell basename $(1)): $(TARGET_OUT_LINUX)
	STATIC=0 GOOS=linux GOARCH=$(GOARCH_LOCAL) LDFLAGS='-extldflags -static -s -w' common/scripts/gobuild.sh $(TARGET_OUT_LINUX)/ $(1)
endif
endef

$(foreach bin,$(BINARIES),$(eval $(call build-linux,$(bin))))

gen-charts:
	@operator/scripts/run_update_charts.sh

include tools/istio-docker.mk
