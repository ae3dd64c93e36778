// Conformance mappings: verl-agent's GiGPO (gigpo/core_gigpo.py at 29e3e8b, read from
// vanzll/verl-agent d0b9724). How to get verl-agent's numbers from posttrain:
//
//   compute_step_discounted_returns  credit::step_returns(step_returns_options::verl_agent(gamma)):
//                                    rows of a trajectory in batch order, any interleaving; rewards
//                                    cast to float32 and the result stored as float32, as upstream.
//   episode_norm_reward              credit::episode_advantages(gigpo_options::verl_agent(mode)), with
//                                    episode_stats::across_steps (compute_mean_std_cross_steps=True) or
//                                    per_trajectory (False); scores = advantage::sequence_scores.
//   step_norm_reward                 credit::step_advantages over the given step-group labels.
//   compute_gigpo_outcome_advantage  credit::gigpo(gigpo_options::verl_agent(mode, step_advantage_w, eps))
//                                    over exact anchor-state groups, or similarity_groups with
//                                    ratio_similarity (difflib ratio) when enable_similarity is set.
// Every per-step result goes to tokens by advantage::broadcast_to_tokens (x * mask).
// Group ids and observations are strings in the case files: they become 64-bit keys through
// credit::state_keys, which refuses colliding strings.

#include "conformance.hpp"

#include <posttrain/credit/gigpo.hpp>
#include <posttrain/credit/returns.hpp>

namespace conformance {
namespace {

namespace cr = posttrain::credit;
namespace adv = posttrain::advantage;
using posttrain::exec::seq;

std::vector<std::int64_t> keys_of(const group_ids& ids) {
    if (ids.strings) return cr::state_keys(ids.s);
    return ids.i;
}

cr::gigpo_norm norm_of(const std::string& mode) {
    if (mode == "mean_norm") return cr::gigpo_norm::mean_norm;
    if (mode == "mean_std_norm") return cr::gigpo_norm::mean_std_norm;
    throw std::runtime_error("unknown GiGPO mode '" + mode + "'");
}

// Per-step values broadcast over the response tokens under the mask, as an [N, T] case tensor.
tensor to_tokens(const std::vector<double>& per_step, const tensor& mask) {
    tensor out = zeros(mask.shape);
    adv::broadcast_to_tokens(seq, per_step, mask.view2(), view2(out.data, mask.rows(), mask.cols()));
    return out;
}

std::vector<double> scores_of(const tensor& token_rewards) {
    std::vector<double> s(static_cast<std::size_t>(token_rewards.rows()));
    adv::sequence_scores(seq, token_rewards.view2(), s);
    return s;
}

json labels_json(const posttrain::grouping_result& g) {
    json a = json::array();
    for (index_t k : g.group_of) a.push_back(k);
    return a;
}

void step_discounted_returns(const case_context& c, produced& out) {
    const tensor rewards = c.input("rewards");
    for (const auto& m : c.inputs.at("active_masks"))
        if (!m.get<bool>()) throw skip_case("an inactive step makes upstream assert; not mapped");
    const std::vector<std::int64_t> traj = keys_of(c.ids("traj_uid"));
    const index_t n = rewards.numel();
    std::vector<float> r32(static_cast<std::size_t>(n)), ret(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) r32[std::size_t(i)] = static_cast<float>(rewards.data[std::size_t(i)]);
    // No episode groups here: each trajectory is its own group; the state is not read.
    const auto steps = cr::steps(traj, traj, traj, r32);
    (void)cr::step_returns(seq, steps, ret, cr::step_returns_options::verl_agent(c.param("gamma")));
    out.set("step_returns", from_values(std::vector<double>(ret.begin(), ret.end()), {n}, "float32"));
}

void episode_norm_reward(const case_context& c, produced& out) {
    const tensor token_rewards = c.input("token_level_rewards"), mask = c.input("response_mask");
    const std::vector<std::int64_t> group = keys_of(c.ids("index")), traj = keys_of(c.ids("traj_index"));
    const std::vector<double> scores = scores_of(token_rewards);
    auto o = cr::gigpo_options::verl_agent(c.params.at("remove_std").get<bool>() ? cr::gigpo_norm::mean_norm
                                                                                  : cr::gigpo_norm::mean_std_norm,
                                           1.0, c.param("epsilon"));
    if (c.has_param("compute_mean_std_cross_steps") && !c.params.at("compute_mean_std_cross_steps").get<bool>())
        o.episode = cr::episode_stats::per_trajectory;
    std::vector<double> a(scores.size());
    (void)cr::episode_advantages(seq, cr::steps(group, traj, traj), scores, a, o);
    out.set("episode_advantages", to_tokens(a, mask));
}

void step_norm_reward(const case_context& c, produced& out) {
    const tensor step_rewards = c.input("step_rewards"), mask = c.input("response_mask");
    const posttrain::grouping_result groups = group_by(c.ids("index"));
    auto o = cr::gigpo_options::verl_agent(c.params.at("remove_std").get<bool>() ? cr::gigpo_norm::mean_norm
                                                                                  : cr::gigpo_norm::mean_std_norm,
                                           1.0, c.param("epsilon"));
    std::vector<double> a(static_cast<std::size_t>(step_rewards.numel()));
    (void)cr::step_advantages(seq, groups, step_rewards.view1(), a, o);
    out.set("step_advantages", to_tokens(a, mask));
}

void gigpo_outcome(const case_context& c, produced& out) {
    const tensor token_rewards = c.input("token_level_rewards"), step_rewards = c.input("step_rewards"),
                 mask = c.input("response_mask");
    const group_ids obs = c.ids("anchor_obs");
    const std::vector<std::int64_t> group = keys_of(c.ids("index")), traj = keys_of(c.ids("traj_index")), state = keys_of(obs);
    const std::vector<double> scores = scores_of(token_rewards);
    const auto steps = cr::steps(group, traj, state);
    auto o = cr::gigpo_options::verl_agent(norm_of(c.params.at("mode").get<std::string>()), c.param("step_advantage_w"),
                                           c.param("epsilon"));
    posttrain::grouping_result groups;
    if (c.params.at("enable_similarity").get<bool>()) {
        if (!obs.strings) throw std::runtime_error("similarity grouping needs text observations (upstream raises)");
        groups = cr::similarity_groups(seq, steps, cr::ratio_similarity(obs.s, c.param("similarity_thresh")));
    } else {
        groups = cr::anchor_state_groups(seq, steps);
    }
    o.step_groups = &groups;
    std::vector<double> a(scores.size());
    (void)cr::gigpo(seq, steps, scores, step_rewards.view1(), a, o);
    const tensor tokens = to_tokens(a, mask);
    out.set("advantages", tokens);
    out.set("returns", tokens);
    out.set_exact("step_group_canonical", labels_json(groups));
}

}  // namespace

void register_verl_agent(registry& r) {
    r.add("verl-agent/compute_step_discounted_returns",
          {step_discounted_returns, float32_path, "credit::step_returns(step_returns_options::verl_agent(gamma)), float32"});
    r.add("verl-agent/episode_norm_reward",
          {episode_norm_reward, float64_path,
           "credit::episode_advantages(gigpo_options::verl_agent(mode), across_steps | per_trajectory) + broadcast_to_tokens"});
    r.add("verl-agent/step_norm_reward",
          {step_norm_reward, float64_path, "credit::step_advantages(step groups, gigpo_options::verl_agent(mode)) + broadcast_to_tokens"});
    r.add("verl-agent/compute_gigpo_outcome_advantage",
          {gigpo_outcome, float64_path,
           "credit::gigpo(gigpo_options::verl_agent(mode, w, eps)) over anchor_state_groups or similarity_groups(ratio_similarity)"});
}

}  // namespace conformance
