# Miniature of tools/certs/Makefile.selfsigned.mk: the certificates for a self-signed root.
root-ca:
	@echo "openssl req -new -x509 ..."
