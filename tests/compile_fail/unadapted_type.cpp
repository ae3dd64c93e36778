// A type posttrain knows nothing about, passed to an algorithm: one static_assert saying what to include.
#include <vector>

#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/grpo.hpp>

struct my_tensor {
    float* data;
    long n;
};

int main() {
    std::vector<float> rewards{1, 2, 3, 4};
#if defined(POSTTRAIN_SHOULD_FAIL)
    my_tensor advantages{nullptr, 4};
#else
    std::vector<float> advantages(4);
#endif
    auto r = posttrain::advantage::grpo(posttrain::exec::seq, rewards, posttrain::uniform_groups{2}, advantages);
    return static_cast<int>(r.groups) - 2;
}
