#!/bin/sh
# Miniature of a sample script: shipped (release-builder keeps every *.sh of samples/ from 1.8)
kubectl delete -f httpbin.yaml
