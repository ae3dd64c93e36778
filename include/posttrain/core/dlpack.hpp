#pragma once
// DLPack interop. Uses <dlpack/dlpack.h> when it is on the include path; otherwise declares the
// ABI-stable structs of the DLPack specification (v0.8+ layout) under their standard names.

#include <cstdint>

#if defined(__has_include)
#if __has_include(<dlpack/dlpack.h>) && !defined(POSTTRAIN_OWN_DLPACK)
#include <dlpack/dlpack.h>
#define POSTTRAIN_HAS_DLPACK_H 1
#endif
#endif

#if !defined(POSTTRAIN_HAS_DLPACK_H) && !defined(DLPACK_VERSION) && !defined(DLPACK_MAJOR_VERSION)
extern "C" {
typedef enum {
    kDLCPU = 1,
    kDLCUDA = 2,
    kDLCUDAHost = 3,
    kDLOpenCL = 4,
    kDLVulkan = 7,
    kDLMetal = 8,
    kDLVPI = 9,
    kDLROCM = 10,
    kDLROCMHost = 11,
    kDLExtDev = 12,
    kDLCUDAManaged = 13,
    kDLOneAPI = 14,
    kDLWebGPU = 15,
    kDLHexagon = 16,
} DLDeviceType;

typedef struct {
    DLDeviceType device_type;
    int32_t device_id;
} DLDevice;

typedef enum {
    kDLInt = 0U,
    kDLUInt = 1U,
    kDLFloat = 2U,
    kDLOpaqueHandle = 3U,
    kDLBfloat = 4U,
    kDLComplex = 5U,
    kDLBool = 6U,
} DLDataTypeCode;

typedef struct {
    uint8_t code;
    uint8_t bits;
    uint16_t lanes;
} DLDataType;

typedef struct {
    void* data;
    DLDevice device;
    int32_t ndim;
    DLDataType dtype;
    int64_t* shape;
    int64_t* strides;  // in elements; NULL means compact row-major
    uint64_t byte_offset;
} DLTensor;
}
#define POSTTRAIN_DECLARED_DLPACK 1
#endif

#include <string>

namespace posttrain::detail {

// kDLBool by value: DLPack headers older than 0.8 (libtorch 1.13's ATen/dlpack.h) lack the enumerator.
inline constexpr std::uint8_t dl_bool_code = 6;

inline std::string dtype_name(DLDataType t) {
    const char* base = "unknown";
    switch (t.code) {
        case kDLInt: base = "int"; break;
        case kDLUInt: base = "uint"; break;
        case kDLFloat: base = "float"; break;
        case kDLBfloat: base = "bfloat"; break;
        case dl_bool_code: base = "bool"; break;
        case kDLComplex: base = "complex"; break;
        default: break;
    }
    std::string s = base;
    s += std::to_string(t.bits);
    if (t.lanes != 1) s += "x" + std::to_string(t.lanes);
    return s;
}

inline const char* device_name(int type) {
    switch (type) {
        case kDLCPU: return "cpu";
        case kDLCUDA: return "cuda";
        case kDLCUDAHost: return "cuda_host";
        case kDLCUDAManaged: return "cuda_managed";
        case kDLROCM: return "rocm";
        default: return "other";
    }
}

}  // namespace posttrain::detail
