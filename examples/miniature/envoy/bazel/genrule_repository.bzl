# A repository whose BUILD file runs a shell script (a .genrule_cmd file) as a
# genrule. The script is read when the repository is fetched and baked into
# genrule_cmd.bzl, so an edit to it only takes effect once this repository is
# fetched again (bazel sync --only=<name>, or a fresh output base).

def _genrule_repository(ctx):
    envoy_root = ctx.path(Label("@envoy//:WORKSPACE")).dirname
    copy = ctx.execute(["cp", "-R", str(envoy_root) + "/" + ctx.attr.source_dir, "wee8"])
    if copy.return_code != 0:
        fail("Failed to copy %r: %s" % (ctx.attr.source_dir, copy.stderr))

    ctx.symlink(ctx.attr.genrule_cmd_file, "_envoy_genrule_cmd.genrule_cmd")
    cat = ctx.execute(["cat", "_envoy_genrule_cmd.genrule_cmd"])
    if cat.return_code != 0:
        fail("Failed to read genrule command %r: %s" % (ctx.attr.genrule_cmd_file, cat.stderr))

    label = ctx.attr.genrule_cmd_file
    key = "@envoy//%s:%s" % (label.package, label.name)
    ctx.file("WORKSPACE", "workspace(name = %r)\n" % ctx.name)
    ctx.symlink(ctx.attr.build_file, "BUILD.bazel")

    # The BUILD file looks the command up by label, so its origin stays visible.
    ctx.file("genrule_cmd.bzl", """
_GENRULE_CMD = {%r: %r}

def genrule_cmd(label):
    return _GENRULE_CMD[label]
""" % (key, cat.stdout))

genrule_repository = repository_rule(
    implementation = _genrule_repository,
    attrs = {
        "source_dir": attr.string(mandatory = True),
        "genrule_cmd_file": attr.label(
            mandatory = True,
            allow_single_file = [".genrule_cmd"],
        ),
        "build_file": attr.label(
            mandatory = True,
            allow_single_file = [".BUILD"],
        ),
    },
)
