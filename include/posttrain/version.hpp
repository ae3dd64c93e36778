#pragma once

#define POSTTRAIN_VERSION_MAJOR 0
#define POSTTRAIN_VERSION_MINOR 1
#define POSTTRAIN_VERSION_PATCH 0
// MAJOR * 10000 + MINOR * 100 + PATCH, for preprocessor comparisons.
#define POSTTRAIN_VERSION 100

namespace posttrain {
inline constexpr int version_major = POSTTRAIN_VERSION_MAJOR;
inline constexpr int version_minor = POSTTRAIN_VERSION_MINOR;
inline constexpr int version_patch = POSTTRAIN_VERSION_PATCH;
}  // namespace posttrain
