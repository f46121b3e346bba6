# Miniature of istio's tools/istio-docker.mk as in 1.22: every docker target runs tools/docker
# (docker-builder), which reads the images from tools/docker.yaml.
.PHONY: docker docker.push

docker:
	./tools/docker

docker.push:
	./tools/docker --push

docker.%:
	DOCKER_TARGETS=docker.$* ./tools/docker
