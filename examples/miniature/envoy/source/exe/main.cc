// A miniature envoy. `envoy --version` prints the real one's version line,
// <scm revision>/<version>/<scm status>/<build type>/<ssl library>, where the
// revision and status come from the workspace status of the build (see
// source/common/version). It links wee8, built by gn and ninja.
#include <cstdio>
#include <cstring>
#include <string>

#include "wee8.h"

#define ENVOY_VERSION "@VERSION@"

extern const char build_scm_revision[];
extern const char build_scm_status[];

namespace {

std::string version() {
#ifdef NDEBUG
  const std::string build_type = "RELEASE";
#else
  const std::string build_type = "DEBUG";
#endif
  return std::string(build_scm_revision) + "/" + ENVOY_VERSION + "/" + build_scm_status + "/" +
         build_type + "/BoringSSL";
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; i++) {
    if (std::strcmp(argv[i], "--version") == 0) {
      std::printf("\nenvoy  version: %s\n\n", version().c_str());
      return 0;
    }
  }
  std::printf("USAGE: %s [--version] [--help]\n", argv[0]);
  std::printf("envoy %s, wee8 %s (target_cpu %s)\n", version().c_str(), wee8_version(),
              wee8_target_cpu());
  return 0;
}
