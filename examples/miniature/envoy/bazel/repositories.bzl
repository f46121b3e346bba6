load(":genrule_repository.bzl", "genrule_repository")

# Dependencies of envoy, loaded by envoy's WORKSPACE and by every workspace that
# builds envoy as @envoy (istio/proxy).
def envoy_dependencies():
    _rules_cc()
    _rules_java()
    _com_googlesource_chromium_v8()

def _native_rules_repository_impl(ctx):
    ctx.file("WORKSPACE", "workspace(name = %r)\n" % ctx.name)
    ctx.file("BUILD.bazel", "")
    ctx.file(ctx.attr.package + "/BUILD.bazel", "")
    ctx.file(ctx.attr.package + "/defs.bzl", "".join([
        "def %s(**kwargs):\n    native.%s(**kwargs)\n\n" % (rule, rule)
        for rule in ctx.attr.rules
    ]))

# A stand-in for a rules_* repository whose defs.bzl only forwards to Bazel's
# native rules. Bazel's own tools load @rules_cc and @rules_java; the real
# repositories are downloads, and the miniature builds offline.
_native_rules_repository = repository_rule(
    implementation = _native_rules_repository_impl,
    attrs = {
        "package": attr.string(mandatory = True),
        "rules": attr.string_list(mandatory = True),
    },
)

def _rules_cc():
    _native_rules_repository(
        name = "rules_cc",
        package = "cc",
        rules = ["cc_binary", "cc_import", "cc_library", "cc_proto_library", "cc_test", "cc_toolchain", "cc_toolchain_suite"],
    )

def _rules_java():
    _native_rules_repository(
        name = "rules_java",
        package = "java",
        rules = ["java_binary", "java_import", "java_library", "java_runtime", "java_test", "java_toolchain"],
    )

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
