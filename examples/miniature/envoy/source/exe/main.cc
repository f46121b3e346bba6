// A miniature envoy: it prints its version and the wee8 library it links.
#include <cstdio>
#include <cstring>

#include "wee8.h"

#define ENVOY_VERSION "@VERSION@"

int main(int argc, char** argv) {
  for (int i = 1; i < argc; i++) {
    if (std::strcmp(argv[i], "--help") == 0) {
      std::printf("USAGE: %s [--version] [--help]\n", argv[0]);
      return 0;
    }
  }
  std::printf("envoy version: %s (wee8 %s, %s)\n", ENVOY_VERSION, wee8_version(),
              wee8_target_cpu());
  return 0;
}
