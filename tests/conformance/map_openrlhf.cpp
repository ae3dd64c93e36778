// OpenRLHF (OpenRLHF/OpenRLHF 3c3be62): openrlhf/models/utils.py (compute_reward, masked_normalize)
// and RemoteExperienceMaker in openrlhf/trainer/ppo_utils/experience_maker.py. Action masks are int64.

#include <posttrain/advantage/gae.hpp>

#include "conformance.hpp"

namespace conformance {
namespace {

namespace adv = posttrain::advantage;
using posttrain::exec::seq;

adv::outcome_token_reward_options reward_options(const case_context& c) {
    const double kl_coef = c.param("kl_coef");
    if (!c.has_param("reward_clip_range")) return adv::outcome_token_reward_options::openrlhf(kl_coef);
    const auto& range = c.params.at("reward_clip_range");
    return adv::outcome_token_reward_options::openrlhf(kl_coef, true, number(range.at(0)), number(range.at(1)));
}

// compute_reward(r, kl_coef, kl, action_mask, reward_clip_range)
void compute_reward(const case_context& c, produced& out) {
    const tensor r = c.input("r"), kl = c.input("kl"), m = c.input("action_mask");
    tensor reward = zeros({m.rows(), m.cols()});
    adv::outcome_token_rewards(seq, r.view1(), kl.view2(), m.view2(), view2(reward.data, m.rows(), m.cols()), reward_options(c));
    out.set("reward", reward);
}

// masked_normalize(tensor, mask, dim=1, eps): per-row biased whitening, masked positions 0.
void masked_normalize(const case_context& c, produced& out) {
    if (c.param_or("dim", 1) != 1) throw skip_case("masked_normalize over dim 0 is not mapped");
    const tensor x = c.input("tensor"), m = c.input("mask");
    tensor y = zeros({x.rows(), x.cols()});
    adv::masked_normalize(seq, x.view2(), m.view2(), view2(y.data, x.rows(), x.cols()), adv::normalize_options{c.param_or("eps", 1e-8)});
    out.set("normalized", y);
}

// RemoteExperienceMaker.get_cumulative_returns(rewards, action_mask, gamma)
void get_cumulative_returns(const case_context& c, produced& out) {
    const tensor r = c.input("rewards"), m = c.input("action_mask");
    tensor ret = zeros({r.rows(), r.cols()});
    adv::discounted_returns(seq, r.view2(), m.view2(), view2(ret.data, r.rows(), r.cols()),
                            adv::returns_options{c.param("gamma"), adv::masked_tokens::zero_rewards});
    out.set("returns", ret);
}

// RemoteExperienceMaker.compute_advantages_and_returns for the outcome estimators: group shaping of
// the scalar rewards, compute_reward, discounted returns (gamma forced to 1 for the group
// estimators), and the batch whitening for reinforce / reinforce_baseline.
void compute_advantages_and_returns(const case_context& c, produced& out) {
    const std::string est = c.params.at("estimator").get<std::string>();
    const tensor rewards = c.input("rewards"), kl = c.input("kl"), mask = c.input("action_mask");
    const index_t n = rewards.rows(), t = mask.cols();
    const index_t per_prompt = index_t(c.param("n_samples_per_prompt"));

    // Rows arrive in experience order; `index` holds each row's original sample position, and sample
    // i belongs to prompt i / n_samples_per_prompt.
    group_ids prompt;
    for (const auto& experience : c.inputs.at("index"))
        for (const auto& position : experience) prompt.i.push_back(position.get<std::int64_t>() / per_prompt);
    const auto groups = group_by(prompt);

    if (per_prompt > 1) {  // info["group_reward_std"]: the raw rewards' group std, per row
        std::vector<double> mean(std::size_t(groups.num_groups())), sd(mean.size()), count(mean.size());
        adv::group_mean_std_options o;
        o.singleton_unit = false;
        adv::group_mean_std(seq, rewards.view1(), groups, mean, sd, count, o);
        std::vector<double> per_row(static_cast<std::size_t>(n));
        for (index_t i = 0; i < n; ++i) per_row[std::size_t(i)] = sd[std::size_t(groups.group_of[std::size_t(i)])];
        out.set("info_group_reward_std", from_values(per_row, {n}));
    }

    std::vector<double> shaped(static_cast<std::size_t>(n));
    if (est == "rloo") (void)adv::rloo(seq, rewards.view1(), groups, shaped, adv::rloo_options::openrlhf());
    else if (est == "group_norm") (void)adv::grpo(seq, rewards.view1(), groups, shaped, adv::grpo_options::openrlhf(true));
    else if (est == "reinforce_baseline" || est == "dr_grpo")
        (void)adv::grpo(seq, rewards.view1(), groups, shaped, adv::grpo_options::openrlhf(false));
    else if (est == "reinforce" || est == "gae") shaped = rewards.data;
    else throw skip_case("estimator " + est + " is not mapped");

    tensor token_rewards = zeros({n, t});
    adv::outcome_token_rewards(seq, shaped, kl.view2(), mask.view2(), view2(token_rewards.data, n, t), reward_options(c));
    std::vector<double> info_return(static_cast<std::size_t>(n));
    adv::sequence_scores(seq, token_rewards.view2(), info_return);
    out.set("info_return", from_values(info_return, {n}));

    const double gamma = est == "reinforce" || est == "gae" ? c.param("gamma") : 1.0;
    tensor advantages = zeros({n, t}), returns = zeros({n, t});
    if (est == "gae") {
        // get_advantages_and_returns with the critic's values, then the same batch whitening.
        (void)adv::gae(seq, token_rewards.view2(), c.input("values").view2(), mask.view2(), view2(advantages.data, n, t),
                       view2(returns.data, n, t),
                       adv::gae_options::openrlhf(gamma, c.param("lambd"), c.params.value("no_std_norm", false)));
        out.tol = float32_path;  // OpenRLHF takes the whitening mean and variance after .float()
    } else if (est == "reinforce" || est == "reinforce_baseline") {
        // Whitened over every action token of the batch (centred only under no_std_norm).
        (void)adv::reinforce_pp(seq, token_rewards.view2(), mask.view2(), view2(advantages.data, n, t), view2(returns.data, n, t),
                                adv::reinforce_pp_options::openrlhf(gamma, c.params.value("no_std_norm", false)));
        out.tol = float32_path;  // OpenRLHF takes the whitening mean and variance after .float()
    } else {
        adv::discounted_returns(seq, token_rewards.view2(), mask.view2(), view2(returns.data, n, t),
                                adv::returns_options{gamma, adv::masked_tokens::zero_rewards});
        advantages = returns;
    }
    out.set("advantages", advantages);
    out.set("returns", returns);
}

}  // namespace

void register_openrlhf(registry& r) {
    r.add("openrlhf/compute_reward", {compute_reward, float64_path, "outcome_token_rewards(outcome_token_reward_options::openrlhf(kl_coef, clip))"});
    r.add("openrlhf/masked_normalize", {masked_normalize, float64_path, "masked_normalize(normalize_options{eps})"});
    r.add("openrlhf/get_cumulative_returns", {get_cumulative_returns, float64_path, "discounted_returns({gamma, masked_tokens::zero_rewards})"});
    r.add("openrlhf/compute_advantages_and_returns",
          {compute_advantages_and_returns, float64_path,
           "rloo/grpo(openrlhf presets) -> outcome_token_rewards -> discounted_returns or reinforce_pp(reinforce_pp_options::openrlhf(gamma)) or gae(gae_options::openrlhf(gamma, lambd))"});
}

}  // namespace conformance
