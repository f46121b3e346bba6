# Miniature of tools/certs/common.mk: what the certificate makefiles share.
ROOTCA_DAYS ?= 3650
