#pragma once
// The floating element types of the CUDA paths: float and double, as everywhere in posttrain, plus
// __half and __nv_bfloat16, the dtypes models keep log-probs, logits and their gradients in.
//
//   is_half_type_v<E>                  E is __half or __nv_bfloat16
//   to_acc<Acc>(x), from_acc<T>(a)     an element widened to the accumulation type (float or double),
//                                      and an accumulated value rounded once to an element type;
//   to_double(x), from_double<T>(d)    their double forms (the fused losses evaluate tokens in double)
//   device_floats<Const, Rank>(x, w)   the device view of a floating argument of any of the four dtypes,
//                                      from a static view or a DLPack tensor on a CUDA device
//   alternative<V>(variant)            the view of type V a dispatched variant holds, or null
//
// core (host-only, no CUDA headers) cannot name the 16-bit types, so they live here and device_floats
// extends core's floating_input / floating_output with them, for any rank.

#if !defined(__CUDACC__)
#error "<posttrain/cuda/dtypes.cuh> needs nvcc: include it only from .cu files"
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>
#include <utility>
#include <variant>

#include "../config.hpp"
#include "../core/traits.hpp"

namespace posttrain::detail {

template <class E>
inline constexpr bool is_half_type_v = std::is_same_v<E, __half> || std::is_same_v<E, __nv_bfloat16>;

// x as the accumulation type Acc (float or double); a 16-bit float widens exactly through float.
template <class Acc, class T>
POSTTRAIN_HD inline Acc to_acc(T x) {
    if constexpr (std::is_same_v<T, __half>) return static_cast<Acc>(__half2float(x));
    else if constexpr (std::is_same_v<T, __nv_bfloat16>) return static_cast<Acc>(__bfloat162float(x));
    else return static_cast<Acc>(x);
}

// x rounded once to T (to nearest even): a double goes to a 16-bit type directly, never through float,
// which could round twice.
template <class T, class Acc>
POSTTRAIN_HD inline T from_acc(Acc x) {
    if constexpr (std::is_same_v<T, __half>) {
        if constexpr (std::is_same_v<Acc, double>) return __double2half(x);
        else return __float2half_rn(x);
    } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        if constexpr (std::is_same_v<Acc, double>) return __double2bfloat16(x);
        else return __float2bfloat16_rn(x);
    } else {
        return static_cast<T>(x);
    }
}

template <class T>
POSTTRAIN_HD inline double to_double(T x) {
    return to_acc<double>(x);
}

template <class T>
POSTTRAIN_HD inline T from_double(double x) {
    return from_acc<T, double>(x);
}

template <bool Const, class E>
using maybe_const = std::conditional_t<Const, const E, E>;

// A static view of __half or __nv_bfloat16 (a concept, so that the element type is only asked of
// statically viewable types).
template <class X>
concept half_viewable = static_viewable<X> && is_half_type_v<typename static_view_t<X>::value_type>;

// Every floating device view device_floats can give at this rank (a DLPack argument's variant).
template <bool Const, int Rank>
using device_floating_views =
    std::variant<device_view<maybe_const<Const, float>, Rank>, device_view<maybe_const<Const, double>, Rank>,
                 device_view<maybe_const<Const, __half>, Rank>, device_view<maybe_const<Const, __nv_bfloat16>, Rank>>;

// The device view of a floating argument (Const: read-only input; else a writable output): float or
// double as core's floating_input / floating_output, plus __half and __nv_bfloat16 (static views of
// them, or DLPack float16/bfloat16 tensors on a device). As in core, a statically typed argument gives
// a variant of one alternative (nothing is instantiated for the other dtypes); a DLPack one gives
// device_floating_views.
template <bool Const, int Rank, class X>
auto device_floats(X&& x, where w) {
    if constexpr (half_viewable<X>) {
        using E = maybe_const<Const, typename static_view_t<X>::value_type>;
        return std::variant<device_view<E, Rank>>(as_view<E, Rank, device_space>(std::forward<X>(x), w));
    } else if constexpr (dlpack_viewable<X> && !static_viewable<X>) {
        using V = device_floating_views<Const, Rank>;
        const DLTensor t = tensor_traits<std::remove_cvref_t<X>>::dlpack(x);
        const bool f16 = t.dtype.code == kDLFloat && t.dtype.bits == 16 && t.dtype.lanes == 1;
        const bool b16 = t.dtype.code == kDLBfloat && t.dtype.bits == 16 && t.dtype.lanes == 1;
        if (f16 || b16) {
            // The 16-bit types are not in core's DLPack dtype table: check everything else (rank,
            // device, strides, alignment) through a 16-bit integer view of the same memory.
            DLTensor u = t;
            u.dtype = DLDataType{kDLUInt, 16, 1};
            const auto v = view_from_dlpack<maybe_const<Const, std::uint16_t>, Rank, device_space>(u, w);
            index_t e[Rank > 0 ? Rank : 1] = {};
            index_t s[Rank > 0 ? Rank : 1] = {};
            for (int r = 0; r < Rank; ++r) {
                e[r] = v.extent(r);
                s[r] = v.stride(r);
            }
            using H = maybe_const<Const, __half>;
            using BF = maybe_const<Const, __nv_bfloat16>;
            if (f16) return V(device_view<H, Rank>(reinterpret_cast<H*>(v.data()), e, s));
            return V(device_view<BF, Rank>(reinterpret_cast<BF*>(v.data()), e, s));
        }
        require(t.dtype.code == kDLFloat && t.dtype.lanes == 1 && (t.dtype.bits == 32 || t.dtype.bits == 64), w,
                "expected dtype one of {float16, bfloat16, float32, float64}, found " + dtype_name(t.dtype));
        if constexpr (Const)
            return std::visit([](auto v) { return V(v); }, floating_input<Rank, device_space>(std::forward<X>(x), w));
        else
            return std::visit([](auto v) { return V(v); }, floating_output<Rank, device_space>(std::forward<X>(x), w));
    } else if constexpr (Const) {
        return floating_input<Rank, device_space>(std::forward<X>(x), w);
    } else {
        return floating_output<Rank, device_space>(std::forward<X>(x), w);
    }
}

// The view of type V held by v, or null (also when V is not among v's alternatives: a statically
// typed argument of another dtype is then the same invalid_argument as a DLPack one).
template <class V, class... Ts>
V* alternative(std::variant<Ts...>& v) noexcept {
    if constexpr ((std::is_same_v<V, Ts> || ...)) return std::get_if<V>(&v);
    else return nullptr;
}

}  // namespace posttrain::detail
