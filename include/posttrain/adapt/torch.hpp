#pragma once
// Opt-in adapter for libtorch tensors (torch::Tensor is at::Tensor), through the dynamic DLPack form:
// the tensor is described as a borrowed DLTensor (data pointer, sizes, strides, dtype, device) and
// posttrain checks dtype, rank, device, alignment and strides at run time, at the call. Nothing is
// copied and nothing is retained after the call.
//
// Include this header before any other posttrain header: libtorch ships its own DLPack declaration
// (ATen/dlpack.h, same include guard as upstream dlpack.h), and posttrain must see it first rather than
// declare the structs itself.

#if !defined(__has_include)
#error "posttrain/adapt/torch.hpp needs __has_include to find the libtorch headers"
#elif __has_include(<ATen/core/Tensor.h>)
#if __has_include(<ATen/dlpack.h>)
#include <ATen/dlpack.h>
#endif
#include <ATen/core/Tensor.h>
#elif __has_include(<torch/torch.h>)
#include <torch/torch.h>
#else
#error "posttrain/adapt/torch.hpp: libtorch headers not found; add libtorch's include directories (find_package(Torch) and link ${TORCH_LIBRARIES}) or use the DLPack form directly"
#endif

#include <cstdint>

#include "../core/error.hpp"
#include "../core/traits.hpp"

namespace posttrain {
namespace detail {

inline DLDataType torch_dtype(const at::Tensor& t) {
    const auto bits = static_cast<std::uint8_t>(t.element_size() * 8);
    switch (t.scalar_type()) {
        case at::ScalarType::Float:
        case at::ScalarType::Double:
        case at::ScalarType::Half: return DLDataType{kDLFloat, bits, 1};
        case at::ScalarType::BFloat16: return DLDataType{kDLBfloat, bits, 1};
        case at::ScalarType::Char:
        case at::ScalarType::Short:
        case at::ScalarType::Int:
        case at::ScalarType::Long: return DLDataType{kDLInt, bits, 1};
        case at::ScalarType::Byte: return DLDataType{kDLUInt, bits, 1};
        // kDLBool = 6 in DLPack >= 0.8; libtorch 1.13's own dlpack.h (v0.6) lacks the enumerator.
        case at::ScalarType::Bool: return DLDataType{std::uint8_t(6), 8, 1};
        case at::ScalarType::ComplexFloat:
        case at::ScalarType::ComplexDouble: return DLDataType{kDLComplex, bits, 1};
        default: return DLDataType{kDLOpaqueHandle, bits, 1};  // never matches an accepted dtype
    }
}

inline DLDevice torch_device(const at::Tensor& t) {
    const auto d = t.device();
    const std::int32_t id = d.has_index() ? static_cast<std::int32_t>(d.index()) : 0;
    switch (d.type()) {
        case c10::DeviceType::CPU: return DLDevice{kDLCPU, id};
        case c10::DeviceType::CUDA: return DLDevice{kDLCUDA, id};
        case c10::DeviceType::HIP: return DLDevice{kDLROCM, id};
        default: return DLDevice{kDLExtDev, id};
    }
}

}  // namespace detail

template <>
struct tensor_traits<at::Tensor> {
    // Borrowed: shape and strides point into the tensor's metadata, valid while the tensor lives.
    static DLTensor dlpack(const at::Tensor& t) {
        constexpr const char* fn = "posttrain::tensor_traits<at::Tensor>::dlpack";
        if (!t.defined()) detail::raise_invalid_argument(fn, "tensor", "the tensor is undefined");
        // Lazy negation/conjugation bits would be lost by reading raw memory.
        if (t.is_neg() || t.is_conj())
            detail::raise_invalid_argument(fn, "tensor",
                                           "the tensor has a lazy negation or conjugation bit; call resolve_neg() / "
                                           "resolve_conj() first");
        DLTensor d{};
        d.data = t.data_ptr();  // already includes the storage offset
        d.device = detail::torch_device(t);
        d.ndim = static_cast<std::int32_t>(t.dim());
        d.dtype = detail::torch_dtype(t);
        d.shape = const_cast<std::int64_t*>(t.sizes().data());
        d.strides = const_cast<std::int64_t*>(t.strides().data());
        d.byte_offset = 0;
        return d;
    }
};

}  // namespace posttrain
