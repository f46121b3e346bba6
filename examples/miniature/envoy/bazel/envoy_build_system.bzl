# How envoy, and the projects that extend it (istio/proxy), link an envoy binary.
# `repository` is the label prefix of envoy itself: "" inside envoy, "@envoy"
# elsewhere.
def envoy_cc_binary(name, repository = "", deps = [], **kwargs):
    native.cc_binary(
        name = name,
        deps = deps,
        linkstatic = 1,
        linkopts = ["-lpthread"],
        **kwargs
    )
