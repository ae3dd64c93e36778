#pragma once
// tensor_traits<T>: the one customization point through which posttrain sees a caller's tensor type.
//
// Static form (the element type, rank and memory space are known at compile time):
//     template <> struct posttrain::tensor_traits<MyTensor> {
//         static posttrain::tensor_view<float, 2> view(MyTensor& t);              // writable
//         static posttrain::tensor_view<const float, 2> view(const MyTensor& t);  // read-only
//     };
// Dynamic form (dtype, rank, device and strides are checked at run time):
//     template <> struct posttrain::tensor_traits<MyTensor> {
//         static DLTensor dlpack(const MyTensor& t);  // borrowed: points into t
//     };
// Algorithms call as_view<Elem, Rank, Space>(x, where); users never do.

#include <cstdint>
#include <type_traits>
#include <utility>
#include <variant>

#include "dlpack.hpp"
#include "error.hpp"
#include "view.hpp"

namespace posttrain {

template <class T, class Enable = void>
struct tensor_traits {};

// tensor_view adapts itself.
template <class T, int R, class S>
struct tensor_traits<tensor_view<T, R, S>> {
    static constexpr tensor_view<T, R, S> view(const tensor_view<T, R, S>& v) noexcept { return v; }
};

// DLTensor adapts itself in the dynamic form.
template <>
struct tensor_traits<DLTensor> {
    static DLTensor dlpack(const DLTensor& t) noexcept { return t; }
};

template <class X>
concept static_viewable = requires(X& x) {
    { tensor_traits<std::remove_cvref_t<X>>::view(x) };
} && is_tensor_view<std::remove_cvref_t<decltype(tensor_traits<std::remove_cvref_t<X>>::view(std::declval<X&>()))>>::value;

template <class X>
concept dlpack_viewable = requires(const X& x) {
    { tensor_traits<std::remove_cvref_t<X>>::dlpack(x) } -> std::convertible_to<DLTensor>;
};

template <class X>
concept viewable = static_viewable<X> || dlpack_viewable<X>;

// The view type the static form gives for X (X may be const-qualified).
template <class X>
using static_view_t = std::remove_cvref_t<decltype(tensor_traits<std::remove_cvref_t<X>>::view(std::declval<X&>()))>;

namespace detail {

template <class T>
constexpr DLDataType dl_dtype_of() noexcept {
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_same_v<U, bool>) return DLDataType{dl_bool_code, 8, 1};
    else if constexpr (std::is_floating_point_v<U>) return DLDataType{kDLFloat, uint8_t(sizeof(U) * 8), 1};
    else if constexpr (std::is_signed_v<U>) return DLDataType{kDLInt, uint8_t(sizeof(U) * 8), 1};
    else return DLDataType{kDLUInt, uint8_t(sizeof(U) * 8), 1};
}

inline bool same_dtype(DLDataType a, DLDataType b) noexcept {
    return a.code == b.code && a.bits == b.bits && a.lanes == b.lanes;
}

template <class Space>
inline bool device_matches(int device_type) noexcept {
    if constexpr (std::is_same_v<Space, host_space>)
        return device_type == kDLCPU || device_type == kDLCUDAHost || device_type == kDLCUDAManaged ||
               device_type == kDLROCMHost;
    else
        return device_type == kDLCUDA || device_type == kDLCUDAManaged;
}

// Checks a borrowed DLTensor against the expected element type, rank and space and builds the view.
template <class Elem, int Rank, class Space>
tensor_view<Elem, Rank, Space> view_from_dlpack(const DLTensor& t, where w) {
    constexpr DLDataType want = dl_dtype_of<Elem>();
    // A uint8 tensor is never read as bool: bytes other than 0 and 1 are not valid bools. Masks
    // accept uint8 as its own element type instead (older torch exports bool as uint8).
    const bool dtype_ok = same_dtype(t.dtype, want);
    require(dtype_ok, w, "expected dtype " + dtype_name(want) + ", found " + dtype_name(t.dtype));
    require(t.ndim == Rank, w, "expected rank " + str(Rank) + ", found rank " + str(t.ndim));
    require(device_matches<Space>(t.device.device_type), w,
            std::string("expected a tensor on ") + (std::is_same_v<Space, host_space> ? "the host (cpu)" : "a CUDA device") +
                ", found device '" + device_name(t.device.device_type) + "'");
    index_t extents[Rank > 0 ? Rank : 1] = {};
    index_t strides[Rank > 0 ? Rank : 1] = {};
    index_t expected = 1;
    for (int r = Rank - 1; r >= 0; --r) {
        require(t.shape != nullptr, w, "DLTensor has a null shape pointer");
        extents[r] = t.shape[r];
        require(extents[r] >= 0, w, "negative extent " + str(extents[r]) + " in dimension " + str(r));
        strides[r] = t.strides ? t.strides[r] : expected;
        require(strides[r] >= 0 || extents[r] <= 1, w,
                "negative stride " + str(strides[r]) + " in dimension " + str(r) + " is not supported");
        if (strides[r] < 0) strides[r] = 0;
        expected *= extents[r];
    }
    auto* base = static_cast<unsigned char*>(t.data) + t.byte_offset;
    require(base != nullptr || expected == 0, w, "DLTensor has a null data pointer");
    require(reinterpret_cast<std::uintptr_t>(base) % alignof(Elem) == 0, w,
            "data is not aligned to " + str(alignof(Elem)) + " bytes");
    return tensor_view<Elem, Rank, Space>(reinterpret_cast<Elem*>(base), extents, strides);
}

template <class X>
inline constexpr bool always_false = false;

}  // namespace detail

// The single conversion every algorithm applies to its tensor arguments.
template <class Elem, int Rank, class Space = host_space, class X>
tensor_view<Elem, Rank, Space> as_view(X&& x, detail::where w) {
    using Base = std::remove_cvref_t<X>;
    if constexpr (static_viewable<X>) {
        auto v = tensor_traits<Base>::view(x);
        using V = decltype(v);
        static_assert(std::is_same_v<typename V::space, Space> || !std::is_same_v<Space, device_space>,
                      "posttrain: this argument lives in host memory but the execution policy runs on the "
                      "device; pass a device_view (or a DLPack tensor on a CUDA device)");
        static_assert(std::is_same_v<typename V::space, Space> || !std::is_same_v<Space, host_space>,
                      "posttrain: this argument lives in device memory but the execution policy runs on the "
                      "host; use exec::cuda or copy the data to the host");
        static_assert(V::rank == Rank, "posttrain: argument has the wrong rank for this algorithm");
        static_assert(std::is_same_v<typename V::value_type, std::remove_cv_t<Elem>>,
                      "posttrain: argument has the wrong element type for this algorithm");
        static_assert(std::is_const_v<Elem> || !std::is_const_v<typename V::element_type>,
                      "posttrain: an output argument must be writable (it was passed as const)");
        return tensor_view<Elem, Rank, Space>(v);
    } else if constexpr (dlpack_viewable<X>) {
        return detail::view_from_dlpack<Elem, Rank, Space>(tensor_traits<Base>::dlpack(x), w);
    } else {
        static_assert(detail::always_false<Base>,
                      "posttrain: this type is not adapted as a tensor. Include the adapter for its family "
                      "(<posttrain/adapt/std.hpp>, <posttrain/adapt/eigen.hpp>, <posttrain/adapt/mdspan.hpp>, "
                      "<posttrain/adapt/torch.hpp>) or specialize posttrain::tensor_traits<T> with view() or dlpack()");
        return {};
    }
}

namespace detail {

// Run-time element-type dispatch. For a statically typed argument the variant has one alternative,
// so nothing is instantiated twice; a DLPack argument is matched against each allowed element type.
template <class... Elems>
struct elem_list {};

using floating_elems = elem_list<float, double>;
using mask_elems = elem_list<bool, float, double, std::int64_t, std::int32_t, std::uint8_t, std::int8_t>;
using id_elems = elem_list<std::int64_t, std::int32_t, std::uint64_t, std::uint32_t>;

template <class Elem, class X>
concept static_elem_in = static_viewable<X> &&
                         std::is_same_v<typename static_view_t<X>::value_type, Elem>;

template <bool Const, int Rank, class Space, class List>
struct dispatch_view;

template <bool Const, int Rank, class Space, class... Elems>
struct dispatch_view<Const, Rank, Space, elem_list<Elems...>> {
    using variant_type = std::variant<tensor_view<std::conditional_t<Const, const Elems, Elems>, Rank, Space>...>;

    template <class X>
    static auto make(X&& x, where w) {
        using Base = std::remove_cvref_t<X>;
        if constexpr (static_viewable<X>) {
            using V = static_view_t<X>;
            static_assert((std::is_same_v<typename V::value_type, Elems> || ...),
                          "posttrain: argument has an element type this algorithm does not accept "
                          "(values: float or double; masks: bool or any arithmetic type; ids: integers)");
            using E = std::conditional_t<Const, const typename V::value_type, typename V::value_type>;
            return std::variant<tensor_view<E, Rank, Space>>(as_view<E, Rank, Space>(std::forward<X>(x), w));
        } else if constexpr (dlpack_viewable<X>) {
            const DLTensor t = tensor_traits<Base>::dlpack(x);
            variant_type out;
            bool matched = false;
            auto try_one = [&](auto tag) {
                using E = typename decltype(tag)::type;
                if (matched) return;
                DLDataType want = dl_dtype_of<E>();
                const bool ok = same_dtype(t.dtype, want);
                if (ok) {
                    out = view_from_dlpack<std::conditional_t<Const, const E, E>, Rank, Space>(t, w);
                    matched = true;
                }
            };
            (try_one(std::type_identity<Elems>{}), ...);
            if (!matched) {
                std::string allowed;
                ((allowed += (allowed.empty() ? "" : ", ") + dtype_name(dl_dtype_of<Elems>())), ...);
                raise_invalid_argument(w.function, w.argument,
                                       "expected dtype one of {" + allowed + "}, found " + dtype_name(t.dtype));
            }
            return out;
        } else {
            return as_view<std::conditional_t<Const, const float, float>, Rank, Space>(std::forward<X>(x), w), variant_type{};
        }
    }
};

// Read-only floating-point input.
template <int Rank, class Space = host_space, class X>
auto floating_input(X&& x, where w) {
    return dispatch_view<true, Rank, Space, floating_elems>::make(std::forward<X>(x), w);
}
// Writable floating-point output.
template <int Rank, class Space = host_space, class X>
auto floating_output(X&& x, where w) {
    return dispatch_view<false, Rank, Space, floating_elems>::make(std::forward<X>(x), w);
}
// Read-only mask of any arithmetic type or bool (nonzero = valid).
template <int Rank, class Space = host_space, class X>
auto mask_input(X&& x, where w) {
    return dispatch_view<true, Rank, Space, mask_elems>::make(std::forward<X>(x), w);
}
// Read-only integer ids.
template <int Rank, class Space = host_space, class X>
auto id_input(X&& x, where w) {
    return dispatch_view<true, Rank, Space, id_elems>::make(std::forward<X>(x), w);
}

}  // namespace detail
}  // namespace posttrain
