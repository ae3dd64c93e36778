#pragma once
// Adapter for Eigen dense objects with direct memory access: Matrix, Array, Map (any inner/outer
// stride), Ref and Block, row- or column-major. Compile-time vectors become rank-1 views and
// everything else rank-2 views ([rows, cols] with Eigen's own strides, so a column-major matrix gives
// strides {1, outer_stride}). The constness of the view follows Eigen's: a const object, a
// Map<const M>, a Ref<const M> or a Block of a const matrix give read-only views.
//
// Expressions without direct access (a + b, m.transpose() of an expression, m.reverse()) are
// rejected at compile time: posttrain never evaluates into a hidden temporary. Evaluate them into a
// Matrix or Array yourself when a copy is what you want.

#include <Eigen/Core>

#include <type_traits>

#include "../core/error.hpp"
#include "../core/traits.hpp"
#include "../core/view.hpp"

namespace posttrain {
namespace detail {

template <class T>
inline constexpr bool is_eigen_dense = std::is_base_of_v<Eigen::DenseBase<T>, T>;

template <class T>
inline constexpr bool eigen_has_direct_access = (int(T::Flags) & int(Eigen::DirectAccessBit)) != 0;

// A Map or Stride with a run-time negative stride has no tensor_view equivalent (views never walk
// backwards), and silently reversing it would be a copy in disguise.
inline void require_eigen_stride(index_t stride, index_t extent) {
    if (stride < 0 && extent > 1)
        raise_invalid_argument("posttrain::tensor_traits<Eigen>", "view",
                               "negative stride " + str(stride) + " is not supported; reverse the data first");
}

template <class Elem, class Xpr>
auto eigen_view(Xpr& x) {
    if constexpr (Xpr::IsVectorAtCompileTime) {
        const index_t n = static_cast<index_t>(x.size());
        const index_t s = static_cast<index_t>(x.innerStride());
        require_eigen_stride(s, n);
        const index_t e[1] = {n};
        const index_t st[1] = {s};
        return tensor_view<Elem, 1>(x.data(), e, st);
    } else {
        const index_t rows = static_cast<index_t>(x.rows()), cols = static_cast<index_t>(x.cols());
        const index_t inner = static_cast<index_t>(x.innerStride()), outer = static_cast<index_t>(x.outerStride());
        const index_t e[2] = {rows, cols};
        index_t st[2];
        if constexpr (Xpr::IsRowMajor) {
            st[0] = outer;
            st[1] = inner;
        } else {
            st[0] = inner;
            st[1] = outer;
        }
        require_eigen_stride(st[0], rows);
        require_eigen_stride(st[1], cols);
        return tensor_view<Elem, 2>(x.data(), e, st);
    }
}

}  // namespace detail

template <class T>
struct tensor_traits<T, std::enable_if_t<detail::is_eigen_dense<T>>> {
    static_assert(detail::eigen_has_direct_access<T>,
                  "posttrain: this Eigen expression has no direct memory access (e.g. a + b or a lazy product); "
                  "evaluate it into an Eigen::Matrix or Eigen::Array first, or pass a Map, Ref or Block");

    // The element constness comes from data(): writable objects give T::Scalar*, read-only ones const.
    static auto view(T& x) {
        using E = std::remove_pointer_t<decltype(x.data())>;
        return detail::eigen_view<E>(x);
    }
    static auto view(const T& x) {
        using E = std::remove_pointer_t<decltype(x.data())>;
        return detail::eigen_view<E>(x);
    }
};

}  // namespace posttrain
