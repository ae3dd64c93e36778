// A host view where device memory is required: a compile error, not a crash on the GPU.
#include <posttrain/core/traits.hpp>

int main() {
    float x[4] = {};
    posttrain::tensor_view<float, 1> host_view(x, 4);
#if defined(POSTTRAIN_SHOULD_FAIL)
    auto v = posttrain::as_view<const float, 1, posttrain::device_space>(host_view, {"f", "x"});
#else
    posttrain::device_view<float, 1> device_view(x, 4);
    auto v = posttrain::as_view<const float, 1, posttrain::device_space>(device_view, {"f", "x"});
#endif
    return static_cast<int>(v.extent(0)) - 4;
}
