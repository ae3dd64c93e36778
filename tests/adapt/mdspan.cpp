// mdspan adapter, for every mdspan implementation on the include path: std::mdspan (C++23),
// the Kokkos reference implementation, cuda::std::mdspan (CCCL). The unit binary sees whichever its
// include path holds; tests/headers builds this file again with CCCL (and Kokkos mdspan when found).

#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <type_traits>
#include <vector>

#include <posttrain/adapt/mdspan.hpp>
#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/grpo.hpp>

namespace pt = posttrain;

namespace {

constexpr pt::detail::where here{"posttrain::test_fn", "x"};

#define POSTTRAIN_MDSPAN_FLAVOR(NAME, NS)                                                                     \
    struct NAME {                                                                                            \
        static constexpr const char* name = #NS;                                                             \
        template <class T, class E, class L = NS::layout_right, class A = NS::default_accessor<T>>           \
        using mdspan = NS::mdspan<T, E, L, A>;                                                               \
        template <class I, std::size_t R>                                                                    \
        using dextents = NS::dextents<I, R>;                                                                 \
        template <class I, std::size_t... E>                                                                 \
        using extents = NS::extents<I, E...>;                                                                \
        using layout_left = NS::layout_left;                                                                 \
        using layout_right = NS::layout_right;                                                               \
        using layout_stride = NS::layout_stride;                                                             \
        template <class I, std::size_t N>                                                                    \
        using array = decltype(NS::layout_stride::mapping<NS::dextents<I, N>>().strides());                  \
    };

#if defined(__cpp_lib_mdspan)
POSTTRAIN_MDSPAN_FLAVOR(std_flavor, std)
#define POSTTRAIN_STD_FLAVOR std_flavor,
#else
#define POSTTRAIN_STD_FLAVOR
#endif
#if defined(MDSPAN_IMPL_STANDARD_NAMESPACE) && !defined(__cpp_lib_mdspan)
POSTTRAIN_MDSPAN_FLAVOR(kokkos_flavor, MDSPAN_IMPL_STANDARD_NAMESPACE)
#define POSTTRAIN_KOKKOS_FLAVOR kokkos_flavor,
#else
#define POSTTRAIN_KOKKOS_FLAVOR
#endif
#if defined(POSTTRAIN_HAS_CUDA_STD_MDSPAN)
POSTTRAIN_MDSPAN_FLAVOR(cuda_flavor, cuda::std)
#define POSTTRAIN_CUDA_FLAVOR cuda_flavor,
#else
#define POSTTRAIN_CUDA_FLAVOR
#endif

// Ends the flavor list (TEST_CASE_TEMPLATE needs at least one type); it runs no mdspan checks.
struct no_flavor {
    static constexpr const char* name = "none";
};

template <class F, class = void>
struct is_flavor : std::true_type {};
template <>
struct is_flavor<no_flavor> : std::false_type {};

}  // namespace

TEST_CASE("adapt mdspan: device_accessor marks device memory") {
    static_assert(std::is_same_v<pt::mdspan_accessor_space<pt::device_accessor<float>>::type, pt::device_space>);
    static_assert(std::is_same_v<pt::mdspan_accessor_space<int>::type, pt::host_space>);
    float x[3] = {1, 2, 3};
    constexpr pt::device_accessor<const float> acc{pt::device_accessor<float>{}};
    CHECK(acc.access(x, 2) == 3.0f);
    CHECK(acc.offset(x, 1) == x + 1);
#if !defined(__cpp_lib_mdspan) && !defined(MDSPAN_IMPL_STANDARD_NAMESPACE) && !defined(POSTTRAIN_HAS_CUDA_STD_MDSPAN)
    MESSAGE("no mdspan implementation on the include path: only the accessor is tested here");
#endif
}

TEST_CASE_TEMPLATE("adapt mdspan: layouts, ranks, constness", F,
                   POSTTRAIN_STD_FLAVOR POSTTRAIN_KOKKOS_FLAVOR POSTTRAIN_CUDA_FLAVOR no_flavor) {
    if constexpr (is_flavor<F>::value) {
        std::vector<float> buf(24);
        for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = float(i);
        using I = std::int64_t;

        SUBCASE("rank 0") {
            typename F::template mdspan<float, typename F::template extents<I>> m(buf.data() + 5);
            auto v = pt::as_view<float, 0>(m, here);
            CHECK(v() == 5.0f);
        }
        SUBCASE("rank 1, static extent") {
            typename F::template mdspan<const float, typename F::template extents<int, 4>> m(buf.data());
            auto v = pt::as_view<const float, 1>(m, here);
            CHECK(v.extent(0) == 4);
            CHECK(v.stride(0) == 1);
        }
        SUBCASE("rank 2, layout_right") {
            typename F::template mdspan<float, typename F::template dextents<I, 2>> m(buf.data(), 4, 6);
            auto v = pt::as_view<float, 2>(m, here);
            CHECK(v.stride(0) == 6);
            CHECK(v.stride(1) == 1);
            CHECK(v(3, 5) == 23.0f);
            CHECK(v.is_contiguous());
        }
        SUBCASE("rank 2, layout_left") {
            typename F::template mdspan<float, typename F::template dextents<int, 2>, typename F::layout_left> m(buf.data(), 4, 6);
            auto v = pt::as_view<const float, 2>(m, here);
            CHECK(v.stride(0) == 1);
            CHECK(v.stride(1) == 4);
            CHECK(v(3, 5) == 23.0f);
            CHECK(v(1, 0) == 1.0f);
        }
        SUBCASE("rank 3, layout_right and layout_left") {
            typename F::template mdspan<float, typename F::template dextents<I, 3>> r(buf.data(), 2, 3, 4);
            auto v = pt::as_view<const float, 3>(r, here);
            CHECK(v.stride(0) == 12);
            CHECK(v(1, 2, 3) == 23.0f);
            typename F::template mdspan<float, typename F::template dextents<I, 3>, typename F::layout_left> l(buf.data(), 2, 3, 4);
            auto w = pt::as_view<const float, 3>(l, here);
            CHECK(w.stride(2) == 6);
            CHECK(w(1, 2, 3) == 23.0f);
        }
        SUBCASE("layout_stride") {
            using E = typename F::template dextents<I, 2>;
            using M = typename F::layout_stride::template mapping<E>;
            typename F::template array<I, 2> strides{};
            strides[0] = 1;
            strides[1] = 5;
            typename F::template mdspan<float, E, typename F::layout_stride> m(buf.data(), M(E(3, 4), strides));
            auto v = pt::as_view<const float, 2>(m, here);
            CHECK(v.stride(0) == 1);
            CHECK(v.stride(1) == 5);
            CHECK(v(2, 3) == 17.0f);
        }
        SUBCASE("constness follows the element type, not the mdspan object") {
            using W = typename F::template mdspan<float, typename F::template dextents<I, 1>>;
            using R = typename F::template mdspan<const float, typename F::template dextents<I, 1>>;
            static_assert(std::is_same_v<pt::static_view_t<const W>, pt::tensor_view<float, 1>>);
            static_assert(std::is_same_v<pt::static_view_t<R>, pt::tensor_view<const float, 1>>);
            const W m(buf.data(), 3);
            pt::as_view<float, 1>(m, here)(0) = 42.0f;
            CHECK(buf[0] == 42.0f);
        }
        SUBCASE("device_accessor gives a device view") {
            using D = typename F::template mdspan<const float, typename F::template dextents<I, 1>, typename F::layout_right,
                                                  pt::device_accessor<const float>>;
            static_assert(std::is_same_v<pt::static_view_t<D>, pt::device_view<const float, 1>>);
            D d(buf.data(), 3);
            CHECK(pt::as_view<const float, 1, pt::device_space>(d, here).extent(0) == 3);
        }
        SUBCASE("grpo: contiguous in, strided out") {
            const std::vector<double> r{1, 2, 3, 5};
            std::vector<double> want(4);
            (void)pt::advantage::grpo(pt::exec::seq, r, pt::uniform_groups{2}, want);
            typename F::template mdspan<const double, typename F::template dextents<I, 1>> in(r.data(), 4);
            std::vector<double> out(8, -9.0);
            using E = typename F::template dextents<I, 1>;
            typename F::template array<I, 1> s{};
            s[0] = 2;
            typename F::template mdspan<double, E, typename F::layout_stride> outm(
                out.data() + 1, typename F::layout_stride::template mapping<E>(E(4), s));
            auto res = pt::advantage::grpo(pt::exec::seq, in, pt::uniform_groups{2}, outm);
            CHECK(res.groups == 2);
            for (int i = 0; i < 4; ++i) CHECK(out[std::size_t(1 + 2 * i)] == want[std::size_t(i)]);
            CHECK(out[0] == -9.0);
            CHECK(out[2] == -9.0);
        }
    }
}

#if defined(POSTTRAIN_HAS_CUDA_STD_MDSPAN)
TEST_CASE("adapt mdspan: posttrain::device_mdspan over cuda::std::mdspan") {
    float x[4] = {1, 2, 3, 4};
    pt::device_mdspan<float, cuda::std::dextents<std::int64_t, 2>> d(x, 2, 2);
    static_assert(std::is_same_v<pt::static_view_t<decltype(d)>, pt::device_view<float, 2>>);
    auto v = pt::as_view<float, 2, pt::device_space>(d, here);
    CHECK(v.stride(0) == 2);
    // A plain cuda::std::mdspan says nothing about its memory: it is a host view.
    cuda::std::mdspan<float, cuda::std::dextents<int, 1>> h(x, 4);
    static_assert(std::is_same_v<pt::static_view_t<decltype(h)>, pt::host_view<float, 1>>);
}
#endif
