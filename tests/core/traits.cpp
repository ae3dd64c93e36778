// tensor_traits and as_view: the static form (compile-time checked) and the DLPack form (checked at
// run time, with messages naming function and argument), and the run-time element-type dispatch.

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include <posttrain/adapt/std.hpp>
#include <posttrain/core/traits.hpp>

namespace pt = posttrain;

namespace {

constexpr pt::detail::where here{"posttrain::test_fn", "x"};

// A caller's tensor type adapted through the static form.
struct my_matrix {
    std::vector<double> data;
    pt::index_t rows = 0, cols = 0;
};

// A caller's tensor type adapted through the dynamic form (like an engine's tensor handle).
struct my_handle {
    DLTensor t;
};

// Holds the storage a DLTensor points to.
struct dl_holder {
    std::vector<unsigned char> bytes;
    std::vector<std::int64_t> shape, strides;
    DLTensor t{};

    template <class T>
    static dl_holder make(std::vector<T> values, std::vector<std::int64_t> shape, DLDataType dtype) {
        dl_holder h;
        h.bytes.resize(values.size() * sizeof(T) + 16);
        std::memcpy(h.bytes.data(), values.data(), values.size() * sizeof(T));
        h.shape = std::move(shape);
        h.t.data = h.bytes.data();
        h.t.device = DLDevice{kDLCPU, 0};
        h.t.ndim = static_cast<std::int32_t>(h.shape.size());
        h.t.dtype = dtype;
        h.t.shape = h.shape.data();
        h.t.strides = nullptr;
        h.t.byte_offset = 0;
        return h;
    }
    void set_strides(std::vector<std::int64_t> s) {
        strides = std::move(s);
        t.strides = strides.data();
    }
};

constexpr DLDataType f32{kDLFloat, 32, 1};
constexpr DLDataType f64{kDLFloat, 64, 1};
constexpr DLDataType i32{kDLInt, 32, 1};

}  // namespace

template <>
struct posttrain::tensor_traits<my_matrix> {
    static pt::tensor_view<double, 2> view(my_matrix& m) { return pt::tensor_view<double, 2>(m.data.data(), m.rows, m.cols); }
    static pt::tensor_view<const double, 2> view(const my_matrix& m) {
        return pt::tensor_view<const double, 2>(m.data.data(), m.rows, m.cols);
    }
};

template <>
struct posttrain::tensor_traits<my_handle> {
    static DLTensor dlpack(const my_handle& h) { return h.t; }
};

static_assert(pt::static_viewable<std::vector<float>>);
static_assert(pt::static_viewable<const std::vector<float>>);
static_assert(pt::static_viewable<my_matrix>);
static_assert(pt::dlpack_viewable<my_handle>);
static_assert(pt::dlpack_viewable<DLTensor>);
static_assert(!pt::viewable<int>);
static_assert(!pt::viewable<std::string>);
static_assert(std::is_same_v<pt::static_view_t<const std::vector<float>>, pt::tensor_view<const float, 1>>);
static_assert(std::is_same_v<pt::static_view_t<std::vector<float>>, pt::tensor_view<float, 1>>);

TEST_CASE("traits: as_view, static form") {
    std::vector<float> v{1, 2, 3};
    SUBCASE("writable container to writable and read-only views") {
        auto w = pt::as_view<float, 1>(v, here);
        auto r = pt::as_view<const float, 1>(v, here);
        static_assert(std::is_same_v<decltype(w), pt::tensor_view<float, 1>>);
        static_assert(std::is_same_v<decltype(r), pt::tensor_view<const float, 1>>);
        CHECK(w.data() == v.data());
        CHECK(r.extent(0) == 3);
    }
    SUBCASE("const container to read-only view") {
        const std::vector<float>& cv = v;
        auto r = pt::as_view<const float, 1>(cv, here);
        CHECK(r(2) == 3.0f);
    }
    SUBCASE("a tensor_view adapts itself") {
        pt::tensor_view<float, 1> tv(v.data(), 3);
        auto r = pt::as_view<const float, 1>(tv, here);
        CHECK(r.data() == v.data());
    }
    SUBCASE("a user's type through its own specialization") {
        my_matrix m{{1, 2, 3, 4, 5, 6}, 2, 3};
        auto w = pt::as_view<double, 2>(m, here);
        w(1, 2) = 60;
        CHECK(m.data[5] == 60);
        const my_matrix& cm = m;
        auto r = pt::as_view<const double, 2>(cm, here);
        CHECK(r(0, 1) == 2);
    }
}

TEST_CASE("traits: as_view, DLPack form accepts valid tensors") {
    SUBCASE("compact row-major (null strides)") {
        auto h = dl_holder::make<float>({1, 2, 3, 4, 5, 6}, {2, 3}, f32);
        auto v = pt::as_view<const float, 2>(h.t, here);
        CHECK(v.extent(0) == 2);
        CHECK(v.extent(1) == 3);
        CHECK(v.stride(0) == 3);
        CHECK(v.stride(1) == 1);
        CHECK(v(1, 0) == 4.0f);
    }
    SUBCASE("explicit strides (transposed)") {
        auto h = dl_holder::make<float>({1, 2, 3, 4, 5, 6}, {3, 2}, f32);
        h.set_strides({1, 3});
        auto v = pt::as_view<float, 2>(h.t, here);
        CHECK(v(2, 1) == 6.0f);
        CHECK(v(1, 0) == 2.0f);
    }
    SUBCASE("byte_offset is applied") {
        auto h = dl_holder::make<double>({1, 2, 3, 4}, {2}, f64);
        h.t.byte_offset = 2 * sizeof(double);
        auto v = pt::as_view<const double, 1>(h.t, here);
        CHECK(v(0) == 3.0);
    }
    SUBCASE("through a user's dynamic-form type") {
        auto h = dl_holder::make<float>({7, 8}, {2}, f32);
        my_handle mh{h.t};
        auto v = pt::as_view<const float, 1>(mh, here);
        CHECK(v(1) == 8.0f);
    }
    SUBCASE("empty tensor with a null data pointer") {
        std::int64_t shape[1] = {0};
        DLTensor t{};
        t.device = DLDevice{kDLCPU, 0};
        t.ndim = 1;
        t.dtype = f32;
        t.shape = shape;
        auto v = pt::as_view<const float, 1>(t, here);
        CHECK(v.size() == 0);
    }
    SUBCASE("negative stride on an extent-1 dimension is harmless") {
        auto h = dl_holder::make<float>({1, 2, 3}, {1, 3}, f32);
        h.set_strides({-3, 1});
        auto v = pt::as_view<const float, 2>(h.t, here);
        CHECK(v(0, 2) == 3.0f);
    }
    SUBCASE("device spaces") {
        auto h = dl_holder::make<float>({1, 2}, {2}, f32);
        h.t.device = DLDevice{kDLCUDA, 0};
        auto d = pt::as_view<const float, 1, pt::device_space>(h.t, here);
        CHECK(d.extent(0) == 2);
        h.t.device = DLDevice{kDLCUDAManaged, 0};  // managed memory is visible from both sides
        CHECK(pt::as_view<const float, 1, pt::device_space>(h.t, here).extent(0) == 2);
        CHECK(pt::as_view<const float, 1, pt::host_space>(h.t, here).extent(0) == 2);
        h.t.device = DLDevice{kDLCUDAHost, 0};  // pinned host memory
        CHECK(pt::as_view<const float, 1>(h.t, here).extent(0) == 2);
    }
}

TEST_CASE("traits: as_view, DLPack form rejects bad tensors naming function and argument") {
    auto h = dl_holder::make<float>({1, 2, 3, 4}, {4}, f32);
    const std::string prefix = "posttrain::test_fn: argument 'x': ";
    SUBCASE("wrong dtype") {
        h.t.dtype = f64;
        CHECK_THROWS_WITH_AS(((void)pt::as_view<const float, 1>(h.t, here)), (prefix + "expected dtype float32, found float64").c_str(),
                             pt::invalid_argument);
        h.t.dtype = DLDataType{kDLFloat, 32, 4};
        CHECK_THROWS_WITH_AS(((void)pt::as_view<const float, 1>(h.t, here)),
                             (prefix + "expected dtype float32, found float32x4").c_str(), pt::invalid_argument);
    }
    SUBCASE("wrong rank") {
        CHECK_THROWS_WITH_AS(((void)pt::as_view<const float, 2>(h.t, here)), (prefix + "expected rank 2, found rank 1").c_str(),
                             pt::invalid_argument);
    }
    SUBCASE("wrong device") {
        h.t.device = DLDevice{kDLCUDA, 0};
        CHECK_THROWS_WITH_AS(((void)pt::as_view<const float, 1>(h.t, here)),
                             (prefix + "expected a tensor on the host (cpu), found device 'cuda'").c_str(),
                             pt::invalid_argument);
        h.t.device = DLDevice{kDLCPU, 0};
        CHECK_THROWS_WITH_AS(((void)pt::as_view<const float, 1, pt::device_space>(h.t, here)),
                             (prefix + "expected a tensor on a CUDA device, found device 'cpu'").c_str(),
                             pt::invalid_argument);
    }
    SUBCASE("null shape") {
        h.t.shape = nullptr;
        CHECK_THROWS_WITH_AS(((void)pt::as_view<const float, 1>(h.t, here)), (prefix + "DLTensor has a null shape pointer").c_str(),
                             pt::invalid_argument);
    }
    SUBCASE("null data") {
        h.t.data = nullptr;
        CHECK_THROWS_WITH_AS(((void)pt::as_view<const float, 1>(h.t, here)), (prefix + "DLTensor has a null data pointer").c_str(),
                             pt::invalid_argument);
    }
    SUBCASE("misaligned data") {
        h.t.byte_offset = 2;
        CHECK_THROWS_WITH_AS(((void)pt::as_view<const float, 1>(h.t, here)), (prefix + "data is not aligned to 4 bytes").c_str(),
                             pt::invalid_argument);
    }
    SUBCASE("negative strides") {
        h.set_strides({-1});
        CHECK_THROWS_WITH_AS(((void)pt::as_view<const float, 1>(h.t, here)),
                             (prefix + "negative stride -1 in dimension 0 is not supported").c_str(), pt::invalid_argument);
    }
    SUBCASE("negative extent") {
        h.shape[0] = -4;
        CHECK_THROWS_WITH_AS(((void)pt::as_view<const float, 1>(h.t, here)), (prefix + "negative extent -4 in dimension 0").c_str(),
                             pt::invalid_argument);
    }
    SUBCASE("the exception carries function and argument") {
        h.t.dtype = i32;
        try {
            (void)pt::as_view<const float, 1>(h.t, here);
            FAIL("no exception");
        } catch (const pt::invalid_argument& e) {
            CHECK(e.function() == "posttrain::test_fn");
            CHECK(e.argument() == "x");
            // Callers catching the standard type see it too.
            const std::invalid_argument& base = e;
            CHECK(std::string(base.what()).find("int32") != std::string::npos);
        }
    }
}

TEST_CASE("traits: floating_input dispatches on the DLPack dtype") {
    SUBCASE("float32") {
        auto h = dl_holder::make<float>({1.5f, 2.5f}, {2}, f32);
        auto v = pt::detail::floating_input<1>(h.t, here);
        REQUIRE(std::holds_alternative<pt::tensor_view<const float, 1>>(v));
        CHECK(std::get<pt::tensor_view<const float, 1>>(v)(1) == 2.5f);
    }
    SUBCASE("float64") {
        auto h = dl_holder::make<double>({1.5, 2.5}, {2}, f64);
        auto v = pt::detail::floating_input<1>(h.t, here);
        REQUIRE(std::holds_alternative<pt::tensor_view<const double, 1>>(v));
        CHECK(std::get<pt::tensor_view<const double, 1>>(v)(0) == 1.5);
    }
    SUBCASE("writable output") {
        auto h = dl_holder::make<double>({0, 0}, {2}, f64);
        auto v = pt::detail::floating_output<1>(h.t, here);
        REQUIRE(std::holds_alternative<pt::tensor_view<double, 1>>(v));
        std::get<pt::tensor_view<double, 1>>(v)(1) = 4.0;
        CHECK(reinterpret_cast<double*>(h.bytes.data())[1] == 4.0);
    }
    SUBCASE("other dtypes are rejected with the accepted list") {
        auto h = dl_holder::make<std::int32_t>({1, 2}, {2}, i32);
        CHECK_THROWS_WITH_AS(((void)pt::detail::floating_input<1>(h.t, here)),
                             "posttrain::test_fn: argument 'x': expected dtype one of {float32, float64}, found int32",
                             pt::invalid_argument);
    }
    SUBCASE("a static argument gives a one-alternative variant") {
        std::vector<double> d{1, 2};
        auto v = pt::detail::floating_input<1>(d, here);
        static_assert(std::variant_size_v<decltype(v)> == 1);
        CHECK(std::get<0>(v)(1) == 2.0);
    }
    SUBCASE("id_input accepts the integer dtypes") {
        auto h = dl_holder::make<std::uint64_t>({5, 6}, {2}, DLDataType{kDLUInt, 64, 1});
        auto v = pt::detail::id_input<1>(h.t, here);
        REQUIRE(std::holds_alternative<pt::tensor_view<const std::uint64_t, 1>>(v));
        auto f = dl_holder::make<float>({5, 6}, {2}, f32);
        CHECK_THROWS_AS(((void)pt::detail::id_input<1>(f.t, here)), pt::invalid_argument);
    }
    SUBCASE("mask_input accepts bool and floats") {
        auto b = dl_holder::make<std::uint8_t>({1, 0}, {2}, DLDataType{6, 8, 1});
        auto v = pt::detail::mask_input<1>(b.t, here);
        REQUIRE(std::holds_alternative<pt::tensor_view<const bool, 1>>(v));
        auto f = dl_holder::make<float>({1, 0}, {2}, f32);
        auto w = pt::detail::mask_input<1>(f.t, here);
        CHECK(std::holds_alternative<pt::tensor_view<const float, 1>>(w));
    }
}
