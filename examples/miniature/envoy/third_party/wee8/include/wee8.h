// The public header of the wee8 stand-in.
#pragma once

#define WEE8_VERSION "0.1.0"

// The wee8 version, and the gn target_cpu the library was built for.
const char* wee8_version();
const char* wee8_target_cpu();
