load(":genrule_repository.bzl", "genrule_repository")

# Dependencies of envoy, loaded by envoy's WORKSPACE and by every workspace that
# builds envoy as @envoy (istio/proxy).
def envoy_dependencies():
    _com_googlesource_chromium_v8()

def _com_googlesource_chromium_v8():
    # wee8 (the embeddable V8) is built by a gn + ninja script run as a genrule.
    genrule_repository(
        name = "com_googlesource_chromium_v8",
        # The real envoy downloads the wee8 source tarball here; the miniature
        # carries a stand-in for it.
        source_dir = "third_party/wee8",
        genrule_cmd_file = "@envoy//bazel/external:wee8.genrule_cmd",
        build_file = "@envoy//bazel/external:wee8.BUILD",
    )
