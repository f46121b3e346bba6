#include "wee8.h"

const char* wee8_version() { return WEE8_VERSION; }

const char* wee8_target_cpu() { return WEE8_TARGET_CPU; }
