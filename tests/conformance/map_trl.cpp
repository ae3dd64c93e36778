// TRL (huggingface/trl f2cd577): the advantage block of GRPOTrainer._generate_and_score_completions.
// rewards_per_func [B, K] (NaN = the reward function returned None); rows are grouped contiguously by
// num_generations. Outputs: advantages, rewards (the aggregated reward), std_rewards (the std that
// divides, or that is only logged under scale_rewards="none") and is_std_zero (torch.isclose(std, 0)).

#include "conformance.hpp"

namespace conformance {
namespace {

namespace adv = posttrain::advantage;
using posttrain::exec::seq;

adv::scale parse_scale(const std::string& s) {
    if (s == "group") return adv::scale::group;
    if (s == "batch") return adv::scale::batch;
    if (s == "none") return adv::scale::none;
    throw skip_case("scale_rewards '" + s + "' is not mapped");
}

// GRPOTrainer advantages: gdpo(gdpo_options::trl(aggregation, scale, reward_weights)).
void grpo_advantages(const case_context& c, produced& out) {
    const tensor r = c.input("rewards_per_func");
    const index_t n = r.rows();
    const index_t g = index_t(c.param("num_generations"));
    const std::string agg = c.params.at("multi_objective_aggregation").get<std::string>();
    const std::string scale_name = c.params.at("scale_rewards").get<std::string>();
    const auto weights = c.params.at("reward_weights").get<std::vector<double>>();
    const bool normalize_first = agg == "normalize_then_sum";
    if (!normalize_first && agg != "sum_then_normalize") throw skip_case("aggregation '" + agg + "' is not mapped");

    // normalize_then_sum always z-scores per group and then over the batch; scale_rewards is unused there.
    const auto options = adv::gdpo_options::trl(normalize_first ? adv::aggregation::normalize_then_sum
                                                                : adv::aggregation::sum_then_normalize,
                                                normalize_first ? adv::scale::group : parse_scale(scale_name), weights);
    std::vector<double> advantages(static_cast<std::size_t>(n)), rewards(static_cast<std::size_t>(n));
    (void)adv::gdpo(seq, r.view2(), posttrain::uniform_groups{g}, advantages, rewards, options);

    // The std TRL reports: the batch std (normalize_then_sum, or scale "batch"), else the group std;
    // zeros where TRL has no std to take (num_generations == 1, or a batch of one row).
    std::vector<double> std_rewards(std::size_t(n), 0.0);
    const bool batch_std = normalize_first || scale_name == "batch";
    if (batch_std ? n > 1 : g > 1) {
        const std::vector<double> sd = block_nanstd(rewards, batch_std ? n : g, /*float32_bessel=*/true);
        for (index_t i = 0; i < n; ++i) std_rewards[std::size_t(i)] = sd[std::size_t(batch_std ? 0 : i / g)];
    }
    tensor is_zero = zeros({n}, "bool");
    for (index_t i = 0; i < n; ++i) is_zero.data[std::size_t(i)] = isclose_zero(std_rewards[std::size_t(i)]) ? 1.0 : 0.0;

    out.set("advantages", from_values(advantages, {n}));
    out.set("rewards", from_values(rewards, {n}));
    out.set("std_rewards", from_values(std_rewards, {n}));
    out.set("is_std_zero", is_zero);
}

}  // namespace

void register_trl(registry& r) {
    r.add("trl/GRPOTrainer.advantages",
          {grpo_advantages, float64_path,
           "gdpo(gdpo_options::trl(multi_objective_aggregation, scale_rewards, reward_weights)) over uniform_groups{num_generations}"});

}

}  // namespace conformance
