#pragma once
// Adapter for mdspan: std::mdspan (C++23 <mdspan>), the Kokkos reference implementation
// (<mdspan/mdspan.hpp> or <experimental/mdspan>, in whatever namespace it was configured) and
// cuda::std::mdspan (<cuda/std/mdspan>, from CCCL). Each header is included when it is on the include
// path. The three are distinct types, so the adapter recognises an mdspan by its shape (a template
// mdspan<T, Extents, Layout, Accessor> with a strided mapping) rather than by its namespace.
//
// Accepted: any rank 0..3, any layout whose mapping is always strided (layout_right, layout_left,
// layout_stride, the padded layouts), any accessor whose data handle is a plain pointer and whose
// reference is a plain lvalue reference (default_accessor, restrict accessors, device_accessor below).
// Like std::span, an mdspan is a reference type: the view has the mdspan's element constness, whatever
// the constness of the mdspan object itself.
//
// Memory space. An mdspan does not say where its pointer points, so posttrain does not guess: the view
// is in host_space unless the accessor says otherwise. To hand device memory to exec::cuda, use
//     posttrain::device_mdspan<float, cuda::std::dextents<int64_t, 1>> x(device_ptr, n);
// (cuda::std::mdspan with posttrain::device_accessor), or put posttrain::device_accessor<T> in any other
// mdspan, or specialize posttrain::mdspan_accessor_space<YourAccessor> for an accessor of your own.
// A wrong guess would turn a GPU pointer into a host crash; an explicit type turns it into a compile
// error ("lives in host memory") at the call.

#include <cstddef>
#include <type_traits>

#include "../config.hpp"
#include "../core/traits.hpp"
#include "../core/view.hpp"

#if defined(__has_include)
#if __has_include(<mdspan>)
#include <mdspan>
#endif
// Kokkos: respect a configuration the user already chose (e.g. <experimental/mdspan> for
// std::experimental); otherwise bring in its default (namespace Kokkos).
#if !defined(MDSPAN_IMPL_STANDARD_NAMESPACE) && __has_include(<mdspan/mdspan.hpp>)
#include <mdspan/mdspan.hpp>
#endif
#if __has_include(<cuda/std/mdspan>)
#include <cuda/std/mdspan>
#define POSTTRAIN_HAS_CUDA_STD_MDSPAN 1
#endif
#endif

namespace posttrain {

// An accessor that marks its pointer as device memory; otherwise it behaves as default_accessor.
template <class T>
struct device_accessor {
    using offset_policy = device_accessor;
    using element_type = T;
    using reference = T&;
    using data_handle_type = T*;

    constexpr device_accessor() noexcept = default;
    template <class U, class = std::enable_if_t<std::is_convertible_v<U (*)[], T (*)[]>>>
    POSTTRAIN_HD constexpr device_accessor(device_accessor<U>) noexcept {}

    POSTTRAIN_HD constexpr data_handle_type offset(data_handle_type p, std::size_t i) const noexcept { return p + i; }
    POSTTRAIN_HD constexpr reference access(data_handle_type p, std::size_t i) const noexcept { return p[i]; }
};

// The memory space of the data behind an accessor: host unless specialized.
template <class Accessor>
struct mdspan_accessor_space {
    using type = host_space;
};
template <class T>
struct mdspan_accessor_space<device_accessor<T>> {
    using type = device_space;
};

#if defined(POSTTRAIN_HAS_CUDA_STD_MDSPAN)
template <class T, class Extents, class Layout = cuda::std::layout_right>
using device_mdspan = cuda::std::mdspan<T, Extents, Layout, device_accessor<T>>;
#endif

namespace detail {

template <class M>
struct is_mdspan : std::false_type {};

template <template <class, class, class, class> class MD, class T, class E, class L, class A>
    requires requires(const MD<T, E, L, A>& m) {
        typename MD<T, E, L, A>::extents_type;
        typename MD<T, E, L, A>::layout_type;
        typename MD<T, E, L, A>::accessor_type;
        typename MD<T, E, L, A>::mapping_type;
        typename MD<T, E, L, A>::data_handle_type;
        m.data_handle();
        m.mapping();
        MD<T, E, L, A>::rank();
        MD<T, E, L, A>::is_always_strided();
    }
struct is_mdspan<MD<T, E, L, A>> : std::true_type {};

template <class M>
inline constexpr bool is_mdspan_v = is_mdspan<M>::value;

}  // namespace detail

template <class M>
struct tensor_traits<M, std::enable_if_t<detail::is_mdspan_v<M>>> {
    using element_type = typename M::element_type;
    using accessor_type = typename M::accessor_type;
    using space = typename mdspan_accessor_space<accessor_type>::type;
    static constexpr int rank = static_cast<int>(M::rank());

    static_assert(rank <= 3, "posttrain: mdspan of rank > 3 cannot be viewed (posttrain tensors have rank 0 to 3)");
    static_assert(M::is_always_strided(),
                  "posttrain: this mdspan's layout is not strided; use layout_right, layout_left or layout_stride");
    static_assert(std::is_same_v<typename M::data_handle_type, element_type*> &&
                      std::is_same_v<typename accessor_type::reference, element_type&>,
                  "posttrain: this mdspan's accessor does not address plain memory (its data handle must be a "
                  "pointer and its reference a plain reference)");

    static tensor_view<element_type, rank, space> view(const M& m) noexcept {
        if constexpr (rank == 0) {
            return tensor_view<element_type, 0, space>(m.data_handle());
        } else {
            index_t e[rank];
            index_t s[rank];
            for (int r = 0; r < rank; ++r) {
                e[r] = static_cast<index_t>(m.extent(static_cast<std::size_t>(r)));
                s[r] = static_cast<index_t>(m.stride(static_cast<std::size_t>(r)));
            }
            return tensor_view<element_type, rank, space>(m.data_handle(), e, s);
        }
    }
};

}  // namespace posttrain
