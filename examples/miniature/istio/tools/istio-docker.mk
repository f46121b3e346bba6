# Miniature of istio's tools/istio-docker.mk.
.PHONY: docker docker.all docker.base docker.distroless

HUB ?= istio
TAG ?= latest
BASE_VERSION ?= latest
DOCKER_BUILD_VARIANTS ?= default
ISTIO_DOCKER := $(ISTIO_OUT_LINUX)/docker_build

# Docker target will build the go binaries and package the docker for local testing.
# It does not upload to a registry.
docker: build-linux docker.all

# Add new docker targets to the end of the DOCKER_TARGETS list.
DOCKER_TARGETS ?= docker.pilot docker.proxyv2 docker.kubectl

docker.all: $(DOCKER_TARGETS)

# $(call build-image,NAME,DOCKERFILE): build $(HUB)/NAME:$(TAG) from the context $(ISTIO_DOCKER)/NAME.
define build-image
	cp $(2) $(ISTIO_DOCKER)/$(1)/
	docker build -t $(HUB)/$(1):$(TAG) --build-arg BASE_VERSION=$(BASE_VERSION) \
		--build-arg BASE_DISTRIBUTION=$(DOCKER_BUILD_VARIANTS) \
		--build-arg proxy_version=istio-proxy:$(PROXY_REPO_SHA) --build-arg istio_version=$(VERSION) \
		-f $(ISTIO_DOCKER)/$(1)/$(notdir $(2)) $(ISTIO_DOCKER)/$(1)
endef

docker.base: docker/Dockerfile.base
	docker build -t $(HUB)/base:$(TAG) -f docker/Dockerfile.base docker

docker.distroless: docker/Dockerfile.distroless
	docker build -t $(HUB)/distroless:$(TAG) -f docker/Dockerfile.distroless docker

docker.pilot: pilot/docker/Dockerfile.pilot $(ISTIO_OUT_LINUX)/pilot-discovery
	rm -rf $(ISTIO_DOCKER)/pilot && mkdir -p $(ISTIO_DOCKER)/pilot
	cp $(ISTIO_OUT_LINUX)/pilot-discovery $(ISTIO_DOCKER)/pilot/
	$(call build-image,pilot,pilot/docker/Dockerfile.pilot)

docker.proxyv2: pilot/docker/Dockerfile.proxyv2 $(ISTIO_OUT_LINUX)/pilot-agent $(ISTIO_ENVOY_LINUX_RELEASE_PATH)
	rm -rf $(ISTIO_DOCKER)/proxyv2 && mkdir -p $(ISTIO_DOCKER)/proxyv2
	cp $(ISTIO_OUT_LINUX)/pilot-agent $(ISTIO_DOCKER)/proxyv2/
	cp $(ISTIO_ENVOY_LINUX_RELEASE_PATH) $(ISTIO_DOCKER)/proxyv2/envoy
	$(call build-image,proxyv2,pilot/docker/Dockerfile.proxyv2)

docker.kubectl: docker/Dockerfile.kubectl
	rm -rf $(ISTIO_DOCKER)/kubectl && mkdir -p $(ISTIO_DOCKER)/kubectl
	$(call build-image,kubectl,docker/Dockerfile.kubectl)
