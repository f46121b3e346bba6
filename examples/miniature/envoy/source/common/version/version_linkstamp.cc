// Compiled when the binary is linked, with the workspace status of the build
// (bazel --workspace_status_command) in BUILD_SCM_REVISION and BUILD_SCM_STATUS.
extern const char build_scm_revision[];
extern const char build_scm_status[];

const char build_scm_revision[] = BUILD_SCM_REVISION;
const char build_scm_status[] = BUILD_SCM_STATUS;
