// A host container handed to the CUDA policy is a compile error that names the problem, not a crash.
#include <vector>

#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/grpo.cuh>

int main() {
    namespace pt = posttrain;
#ifdef POSTTRAIN_SHOULD_FAIL
    std::vector<float> rewards(8), advantages(8);
    pt::advantage::grpo(pt::exec::cuda, rewards, pt::uniform_groups{4}, advantages);
#else
    // The same call over device views compiles (it is never run).
    pt::device_view<const float, 1> rewards(nullptr, 8);
    pt::device_view<float, 1> advantages(nullptr, 8);
    pt::advantage::grpo(pt::exec::cuda, rewards, pt::uniform_groups{4}, advantages);
#endif
    return 0;
}
