# How envoy, and the projects that extend it (istio/proxy), link an envoy binary.
# `repository` is the label prefix of envoy itself: "" inside envoy, "@envoy"
# elsewhere.
#
# Unlike the real envoy (linked against the system's glibc), the miniature is
# linked fully static, so an aarch64 build runs under qemu-user on an x86_64
# host without an aarch64 sysroot.
def envoy_cc_binary(name, repository = "", deps = [], **kwargs):
    native.cc_binary(
        name = name,
        deps = deps,
        linkstatic = 1,
        linkopts = ["-static", "-lpthread"],
        **kwargs
    )
