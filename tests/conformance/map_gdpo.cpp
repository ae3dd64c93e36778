// GDPO official code (NVlabs/GDPO b080e63), README Q23: two forks with different arithmetic.
//  - trl-0.18.0 fork, GRPOTrainer advantage block: GDPO when apply_gdpo and K > 1, else plain GRPO.
//  - verl fork, compute_advantage(data, 'gdpo'): two rewards, loop GRPO each, unweighted sum, then a
//    token-weighted masked_whiten.

#include <cmath>

#include "conformance.hpp"

namespace conformance {
namespace {

namespace adv = posttrain::advantage;
using posttrain::exec::seq;

// The trainer holds reward_weights as a float32 tensor; float64 rewards promote the products.
std::vector<double> float32_weights(const json& w) {
    std::vector<double> out;
    for (const auto& x : w) out.push_back(double(float(number(x))));
    return out;
}

// trl fork GRPOTrainer advantage block.
void trl_fork_advantages(const case_context& c, produced& out) {
    tensor r = c.input("rewards_per_func");
    const index_t n = r.rows(), k = r.cols();
    const index_t g = index_t(c.param("num_generations"));
    const auto weights = float32_weights(c.params.at("reward_weights"));
    if (r.dtype == "float32") out.tol = float32_path;  // the trainer's own dtype: the reference ran in float32
    std::vector<double> advantages(static_cast<std::size_t>(n)), combined(static_cast<std::size_t>(n));

    if (c.params.value("apply_gdpo", false) && k > 1) {
        // GDPO: NaN rewards become 0 (nan_to_num), then per-reward group z-scores (eps 1e-4, a group of
        // one has NaN std and drops out of the nansum: singleton::zero), weighted sum, batch z-score.
        for (auto& v : r.data) v = std::isnan(v) ? 0.0 : v;
        auto options = adv::gdpo_options::trl(adv::aggregation::normalize_then_sum, adv::scale::group, weights);
        options.component.float32_bessel = false;  // the fork uses torch .std(): an exact float64 Bessel factor
        (void)adv::gdpo(seq, r.view2(), posttrain::uniform_groups{g}, advantages, combined, options);
        adv::group_mean_std_options batch;
        batch.singleton_unit = false;
        std::vector<double> mean(1), sd(1), count(1);
        adv::group_mean_std(seq, combined, posttrain::uniform_groups{n}, mean, sd, count, batch);
        out.set("advantages", from_values(advantages, {n}));
        out.set("pre_bn_advantages", from_values(combined, {n}));
        out.set("bn_advantages_mean", from_values({mean[0]}, {}));
        out.set("bn_advantages_std", from_values({sd[0]}, {}));
        return;
    }
    // Plain TRL-0.18 GRPO: r = nansum_k(w_k r_k) (a NaN reward counts 0, so NaN -> 0 first is the same
    // sum), group mean and unbiased std, (r - mean) / (std + 1e-4) only when scale_rewards; no NaN
    // handling afterwards, so a group of one gives NaN when scaling.
    const bool scale = c.params.value("scale_rewards", true);
    for (auto& v : r.data) v = std::isnan(v) ? 0.0 : v;
    auto options = adv::gdpo_options::trl(adv::aggregation::sum_then_normalize, scale ? adv::scale::group : adv::scale::none, weights);
    options.component.nonfinite_rewards = adv::nonfinite::propagate;
    options.component.float32_bessel = false;  // torch .std(), not trl's nanstd
    options.component.singleton_groups = scale ? adv::singleton::nan : adv::singleton::zero;
    (void)adv::gdpo(seq, r.view2(), posttrain::uniform_groups{g}, advantages, combined, options);
    const std::vector<double> sd = block_nanstd(combined, g);
    tensor is_zero = zeros({index_t(sd.size())}, "bool");
    for (std::size_t i = 0; i < sd.size(); ++i) is_zero.data[i] = isclose_zero(sd[i]) ? 1.0 : 0.0;
    out.set("advantages", from_values(advantages, {n}));
    out.set("rewards", from_values(combined, {n}));
    out.set("is_std_zero", is_zero);
}

// verl fork compute_advantage(data, 'gdpo'): response_mask = the last response_length columns of the
// int64 attention mask; each reward through loop GRPO (grpo_options::verl(): eps 1e-6, singleton raw
// with the float32 std), unweighted sum, broadcast, masked_whiten (the fork's masked_mean has no
// +1e-8), times the mask.
void verl_fork_advantages(const case_context& c, produced& out) {
    const tensor correct = c.input("token_level_scores_correctness"), format = c.input("token_level_scores_format");
    const tensor attention = c.input("attention_mask");
    const index_t n = correct.rows(), t = index_t(c.param("response_length"));
    std::vector<double> mask(static_cast<std::size_t>(n * t));
    for (index_t i = 0; i < n; ++i)
        for (index_t j = 0; j < t; ++j)
            mask[std::size_t(i * t + j)] = attention.data[std::size_t(i * attention.cols() + attention.cols() - t + j)];
    const posttrain::tensor_view<const double, 2> m(mask.data(), n, t);

    std::vector<double> scores(static_cast<std::size_t>(n * 2)), per_reward(static_cast<std::size_t>(n));
    for (int k = 0; k < 2; ++k) {
        adv::sequence_scores(seq, (k == 0 ? correct : format).view2(), per_reward);
        for (index_t i = 0; i < n; ++i) scores[std::size_t(i * 2 + k)] = per_reward[std::size_t(i)];
    }
    adv::gdpo_options o;
    o.mode = adv::aggregation::normalize_then_sum;
    o.component = adv::grpo_options::verl();
    o.batch_normalize = false;  // the batch step is the token-weighted whitening below
    std::vector<double> summed(static_cast<std::size_t>(n));
    (void)adv::gdpo(seq, posttrain::tensor_view<const double, 2>(scores.data(), n, 2), group_by(c.ids("uid")), summed, o);

    tensor tokens = zeros({n, t}), advantages = zeros({n, t});
    adv::broadcast_to_tokens(seq, summed, m, view2(tokens.data, n, t));
    auto w = adv::whiten_options::verl();
    w.count_epsilon = 0;
    w.mask_output = true;
    (void)adv::masked_whiten(seq, tokens.view2(), m, view2(advantages.data, n, t), w);
    out.set("advantages", advantages);
    out.set("returns", advantages);
}

}  // namespace

void register_gdpo(registry& r) {
    r.add("gdpo/GRPOTrainer.advantages",
          {trl_fork_advantages, float64_path,
           "nan_to_num, gdpo(gdpo_options::trl(normalize_then_sum, group, float32 weights)); plain branch: sum_then_normalize"});
    r.add("gdpo/compute_advantage_gdpo",
          {verl_fork_advantages, float32_path,
           "gdpo(component = grpo_options::verl(), no batch step) on two sequence_scores, broadcast, masked_whiten(verl, count_epsilon 0) * mask"});
}

}  // namespace conformance
