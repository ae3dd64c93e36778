// The README's ten-line example: GRPO advantages for a batch of rollouts over std::vector, grouped
// by CSR offsets (prompts with different numbers of rollouts) or by unsorted prompt ids.
// [quickstart]
#include <posttrain/posttrain.hpp>
#include <cstdio>
namespace pt = posttrain;

int main() {
    std::vector<double> rewards = {1, 0, 0, 1, 1, 0, 1};
    std::vector<double> adv(rewards.size());

    // Prompt 0 has 3 rollouts, prompt 1 has 4: CSR offsets.
    std::vector<std::int64_t> offsets = {0, 3, 7};
    auto stats = pt::advantage::grpo(pt::exec::seq, rewards, pt::ragged(offsets), adv);

    // Or rows in any order, grouped by prompt id (verl's uid, TRL's prompt index).
    std::vector<std::int64_t> uid = {42, 7, 42, 7, 7, 42, 7};
    auto groups = pt::grouping::from_ids(pt::exec::seq, uid);
    stats = pt::advantage::grpo(pt::exec::seq, rewards, groups, adv, pt::advantage::grpo_options::verl());

    for (double a : adv) std::printf("%+.4f ", a);
    std::printf("\n%lld groups, %lld with zero variance\n", (long long)stats.groups, (long long)stats.zero_variance_groups);
}
// [quickstart]
