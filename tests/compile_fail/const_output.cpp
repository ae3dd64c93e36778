// A const container passed as an output.
#include <vector>

#include <posttrain/adapt/std.hpp>
#include <posttrain/advantage/grpo.hpp>

int main() {
    const std::vector<double> rewards{1, 2, 3, 4};
#if defined(POSTTRAIN_SHOULD_FAIL)
    const std::vector<double> advantages(4);
#else
    std::vector<double> advantages(4);
#endif
    auto r = posttrain::advantage::grpo(posttrain::exec::seq, rewards, posttrain::uniform_groups{2}, advantages);
    return static_cast<int>(r.groups) - 2;
}
