// Adapting your own tensor type: one specialization of posttrain::tensor_traits, in either form.
//
//  - Static form: the element type, rank and memory space are known at compile time. view() returns a
//    tensor_view (pointer, extents, element strides); a const overload gives a read-only view.
//  - DLPack form: the tensor knows its dtype and device only at run time. dlpack() returns a borrowed
//    DLTensor describing the memory, and posttrain checks dtype, rank, device, alignment and strides at
//    the call, raising posttrain::invalid_argument with the function and argument name on a mismatch.
//
// Either way nothing is copied: the algorithm reads and writes the caller's memory.

#include <posttrain/posttrain.hpp>

#include <cstdint>
#include <cstdio>
#include <vector>

// ---- a made-up engine with a statically typed 1-D float buffer -----------------------------------
namespace engine {
struct float_buffer {
    float* ptr;
    std::int64_t len;
};
}  // namespace engine

// [static-form]
template <>
struct posttrain::tensor_traits<engine::float_buffer> {
    static tensor_view<float, 1> view(engine::float_buffer& b) { return tensor_view<float, 1>(b.ptr, b.len); }
    static tensor_view<const float, 1> view(const engine::float_buffer& b) {
        return tensor_view<const float, 1>(b.ptr, b.len);
    }
};
// [static-form]

// ---- a made-up engine with a dynamically typed, possibly strided 2-D tensor ----------------------
namespace engine {
enum class dtype { f32, f64, i64 };
struct any_tensor {
    void* data;
    dtype type;
    std::int64_t shape[2];
    std::int64_t strides[2];  // in elements
    bool on_gpu = false;
};
}  // namespace engine

// [dlpack-form]
template <>
struct posttrain::tensor_traits<engine::any_tensor> {
    static DLTensor dlpack(const engine::any_tensor& t) {
        DLTensor d{};
        d.data = t.data;
        d.device = {t.on_gpu ? kDLCUDA : kDLCPU, 0};
        d.ndim = 2;
        d.dtype = t.type == engine::dtype::f32   ? DLDataType{kDLFloat, 32, 1}
                  : t.type == engine::dtype::f64 ? DLDataType{kDLFloat, 64, 1}
                                                 : DLDataType{kDLInt, 64, 1};
        d.shape = const_cast<std::int64_t*>(t.shape);  // borrowed: valid while t lives
        d.strides = const_cast<std::int64_t*>(t.strides);
        return d;
    }
};
// [dlpack-form]

namespace pt = posttrain;

int main() {
    // Static form: GRPO over engine buffers, two groups of four.
    std::vector<float> r = {1, 0, 0, 1, 0, 0, 0, 1}, a(r.size());
    const engine::float_buffer rewards{r.data(), std::int64_t(r.size())};
    engine::float_buffer advantages{a.data(), std::int64_t(a.size())};
    (void)pt::advantage::grpo(pt::exec::seq, rewards, pt::uniform_groups{4}, advantages);
    std::printf("grpo (static form):");
    for (float x : a) std::printf(" %+.4f", x);
    std::printf("\n");

    // DLPack form: whiten a [2, 3] double tensor under a mask; float or double is decided at run time.
    std::vector<double> x = {1, 2, 3, 4, 5, 6}, y(6);
    std::vector<double> m = {1, 1, 0, 1, 1, 1};
    const engine::any_tensor values{x.data(), engine::dtype::f64, {2, 3}, {3, 1}};
    const engine::any_tensor mask{m.data(), engine::dtype::f64, {2, 3}, {3, 1}};
    engine::any_tensor out{y.data(), engine::dtype::f64, {2, 3}, {3, 1}};
    const pt::moments_result s = pt::advantage::masked_whiten(pt::exec::seq, values, mask, out);
    std::printf("masked_whiten (DLPack form): mean %.4f var %.4f count %.0f\n", s.mean, s.variance, s.count);

    // A mismatch is reported at the call, naming the function and the argument.
    engine::any_tensor ints{x.data(), engine::dtype::i64, {2, 3}, {3, 1}};
    try {
        (void)pt::advantage::masked_whiten(pt::exec::seq, ints, mask, out);
    } catch (const pt::invalid_argument& e) {
        std::printf("rejected: %s\n", e.what());
    }
}
