// verl (volcengine/verl b178a3c): verl/trainer/ppo/core_algos.py, verl/utils/torch_functional.py,
// verl/utils/groupwise.py. Each mapping below is how to get verl's numbers from posttrain.
//
// Every verl outcome estimator takes token_level_rewards [N, T], response_mask [N, T] and group ids
// `index`; the outcome score is the row sum of token_level_rewards (mask not applied), and the
// per-sequence advantage is broadcast to tokens as A_i * mask; advantages and returns are equal.

#include <algorithm>
#include <map>

#include "conformance.hpp"

namespace conformance {
namespace {

namespace adv = posttrain::advantage;
using posttrain::exec::seq;

struct outcome_batch {
    tensor rewards, mask;
    index_t n = 0, t = 0;
    std::vector<double> scores;  // sequence_scores: row sums of token_level_rewards
};

outcome_batch read_outcome(const case_context& c) {
    outcome_batch b;
    b.rewards = c.input("token_level_rewards");
    b.mask = c.input("response_mask");
    b.n = b.rewards.rows();
    b.t = b.rewards.cols();
    b.scores.resize(static_cast<std::size_t>(b.n));
    adv::sequence_scores(seq, b.rewards.view2(), b.scores);
    return b;
}

// advantages = returns = per_sequence[i] * mask[i, t]
void emit_broadcast(produced& out, const outcome_batch& b, const std::vector<double>& per_sequence) {
    tensor a = zeros({b.n, b.t});
    adv::broadcast_to_tokens(seq, per_sequence, b.mask.view2(), view2(a.data, b.n, b.t));
    out.set("advantages", a);
    out.set("returns", a);
}

bool flag(const json& j, const char* name, bool fallback) {
    return j.contains(name) && !j.at(name).is_null() ? j.at(name).get<bool>() : fallback;
}

// compute_grpo_outcome_advantage(norm_adv_by_std_in_grpo, epsilon): loop GRPO, singleton = raw score.
void grpo(const case_context& c, produced& out) {
    auto b = read_outcome(c);
    std::vector<double> a(static_cast<std::size_t>(b.n));
    (void)adv::grpo(seq, b.scores, group_by(c.ids("index")), a,
              adv::grpo_options::verl(flag(c.params, "norm_adv_by_std_in_grpo", true), c.param_or("epsilon", 1e-6)));
    emit_broadcast(out, b, a);
}

// compute_grpo_vectorized_outcome_advantage: group_mean_std statistics in float32.
void grpo_vectorized(const case_context& c, produced& out) {
    auto b = read_outcome(c);
    std::vector<double> a(static_cast<std::size_t>(b.n));
    (void)adv::grpo(seq, b.scores, group_by(c.ids("index")), a,
              adv::grpo_options::verl_vectorized(flag(c.params, "norm_adv_by_std_in_grpo", true),
                                                 c.param_or("epsilon", 1e-6)));
    emit_broadcast(out, b, a);
}

// compute_rloo_outcome_advantage: singleton keeps its raw score.
void rloo(const case_context& c, produced& out) {
    auto b = read_outcome(c);
    std::vector<double> a(static_cast<std::size_t>(b.n));
    (void)adv::rloo(seq, b.scores, group_by(c.ids("index")), a, adv::rloo_options::verl());
    emit_broadcast(out, b, a);
}

// compute_rloo_vectorized_outcome_advantage: singleton gets 0.
void rloo_vectorized(const case_context& c, produced& out) {
    auto b = read_outcome(c);
    std::vector<double> a(static_cast<std::size_t>(b.n));
    (void)adv::rloo(seq, b.scores, group_by(c.ids("index")), a, adv::rloo_options::verl_vectorized());
    emit_broadcast(out, b, a);
}

// compute_reinforce_plus_plus_outcome_advantage(config.gamma): discounted returns (a masked token
// resets the running sum), masked_whiten over the batch, times the mask; returns = the returns.
void reinforce_plus_plus(const case_context& c, produced& out) {
    const tensor r = c.input("token_level_rewards"), m = c.input("response_mask");
    const double gamma = c.params.contains("config") ? number(c.params.at("config").at("gamma")) : 1.0;
    tensor a = zeros({r.rows(), r.cols()}), ret = zeros({r.rows(), r.cols()});
    (void)adv::reinforce_pp(seq, r.view2(), m.view2(), view2(a.data, r.rows(), r.cols()), view2(ret.data, r.rows(), r.cols()),
                      adv::reinforce_pp_options::verl(gamma));
    out.set("advantages", a);
    out.set("returns", ret);
}

// compute_reinforce_plus_plus_baseline_outcome_advantage: score - group mean, tiled, whitened.
void reinforce_plus_plus_baseline(const case_context& c, produced& out) {
    auto b = read_outcome(c);
    tensor a = zeros({b.n, b.t});
    (void)adv::reinforce_pp_baseline(seq, b.scores, group_by(c.ids("index")), b.mask.view2(), view2(a.data, b.n, b.t),
                               adv::reinforce_pp_baseline_options::verl());
    out.set("advantages", a);
    out.set("returns", a);
}

// compute_remax_outcome_advantage: reverse cumsum of masked rewards minus baseline * mask.
void remax(const case_context& c, produced& out) {
    const tensor r = c.input("token_level_rewards"), m = c.input("response_mask"), base = c.input("reward_baselines");
    tensor a = zeros({r.rows(), r.cols()}), ret = zeros({r.rows(), r.cols()});
    adv::remax(seq, r.view2(), base.view1(), m.view2(), view2(a.data, r.rows(), r.cols()),
               view2(ret.data, r.rows(), r.cols()));
    out.set("advantages", a);
    out.set("returns", ret);
}

// compute_opo_outcome_advantage: baseline = length-weighted group mean, length = mask row sum.
void opo(const case_context& c, produced& out) {
    auto b = read_outcome(c);
    std::vector<double> lengths(static_cast<std::size_t>(b.n)), a(static_cast<std::size_t>(b.n));
    adv::sequence_lengths(seq, b.mask.view2(), lengths);
    (void)adv::opo(seq, b.scores, lengths, group_by(c.ids("index")), a, adv::opo_options::verl());
    emit_broadcast(out, b, a);
}

// compute_grpo_passk_outcome_advantage: the norm flag comes from config only (the keyword is ignored).
void grpo_passk(const case_context& c, produced& out) {
    auto b = read_outcome(c);
    const bool norm = c.params.contains("config") ? flag(c.params.at("config"), "norm_adv_by_std_in_grpo", true) : true;
    std::vector<double> a(static_cast<std::size_t>(b.n));
    (void)adv::grpo_passk(seq, b.scores, group_by(c.ids("index")), a, adv::passk_options::verl(norm, c.param_or("epsilon", 1e-6)));
    emit_broadcast(out, b, a);
}

// compute_gpg_outcome_advantage(f_norm): verl overwrites its alpha argument with N / count_nonzero(scores),
// which is what gpg_options::verl computes; the case's `alpha` parameter is therefore not passed.
void gpg(const case_context& c, produced& out) {
    auto b = read_outcome(c);
    std::vector<double> a(static_cast<std::size_t>(b.n));
    (void)adv::gpg(seq, b.scores, group_by(c.ids("index")), a, adv::gpg_options::verl(c.param_or("f_norm", 1.0)));
    emit_broadcast(out, b, a);
}

// torch_functional.masked_whiten(values, mask, shift_mean)
void masked_whiten(const case_context& c, produced& out) {
    const tensor x = c.input("values"), m = c.input("mask");
    tensor w = zeros({x.rows(), x.cols()});
    (void)adv::masked_whiten(seq, x.view2(), m.view2(), view2(w.data, x.rows(), x.cols()),
                       adv::whiten_options::verl(flag(c.params, "shift_mean", true)));
    out.set("whitened", w);
}

// torch_functional.masked_mean(values, mask, axis): sum(x m) / (sum(m) + 1e-8), whole tensor or per row.
void masked_mean(const case_context& c, produced& out) {
    const tensor x = c.input("values"), m = c.input("mask");
    if (!c.has_param("axis")) {
        out.set("mean", from_values({adv::masked_mean(seq, x.view2(), m.view2(), adv::masked_stats_options::verl())}, {}));
        return;
    }
    if (c.param("axis") != 1) throw skip_case("masked_mean over axis 0 is not mapped");
    std::vector<double> rows(std::size_t(x.rows()));
    adv::masked_row_mean(seq, x.view2(), m.view2(), rows, adv::masked_stats_options::verl());
    out.set("mean", from_values(rows, {x.rows()}));
}

// torch_functional.masked_var(values, mask, unbiased)
void masked_var(const case_context& c, produced& out) {
    const tensor x = c.input("values"), m = c.input("mask");
    const double v = adv::masked_var(seq, x.view2(), m.view2(), adv::masked_stats_options::verl(flag(c.params, "unbiased", true)));
    out.set("var", from_values({v}, {}));
}

// groupwise.as_torch_index: string ids are factorised in sorted (np.unique) order, integer ids are
// used verbatim (G = max + 1, so ids that never occur are empty groups). The layout that follows is a
// stable counting sort of the rows by group index.
struct torch_index {
    std::vector<std::int64_t> gidx;
    std::vector<index_t> permutation, offsets;
    index_t groups = 0;
    posttrain::permuted_groups layout() const {
        return {posttrain::tensor_view<const index_t, 1>(permutation.data(), index_t(permutation.size())),
                posttrain::tensor_view<const index_t, 1>(offsets.data(), index_t(offsets.size()))};
    }
};

torch_index as_torch_index(const group_ids& ids) {
    torch_index t;
    if (ids.strings) {
        std::vector<std::string> uniq = ids.s;
        std::sort(uniq.begin(), uniq.end());
        uniq.erase(std::unique(uniq.begin(), uniq.end()), uniq.end());
        for (const auto& s : ids.s) t.gidx.push_back(std::lower_bound(uniq.begin(), uniq.end(), s) - uniq.begin());
        t.groups = index_t(uniq.size());
    } else {
        t.gidx = ids.i;
        for (auto g : ids.i) {
            if (g < 0) throw skip_case("negative integer group ids are not valid torch indices");
            t.groups = std::max<index_t>(t.groups, g + 1);
        }
    }
    t.offsets.assign(std::size_t(t.groups) + 1, 0);
    for (auto g : t.gidx) ++t.offsets[std::size_t(g) + 1];
    for (index_t g = 0; g < t.groups; ++g) t.offsets[std::size_t(g) + 1] += t.offsets[std::size_t(g)];
    std::vector<index_t> next(t.offsets.begin(), t.offsets.end() - 1);
    t.permutation.resize(t.gidx.size());
    for (std::size_t i = 0; i < t.gidx.size(); ++i) t.permutation[std::size_t(next[std::size_t(t.gidx[i])]++)] = index_t(i);
    return t;
}

// groupwise.group_mean_std(scores, as_torch_index(index), eps): float32 statistics per group.
void group_mean_std(const case_context& c, produced& out) {
    const tensor scores = c.input("scores");
    const torch_index ti = as_torch_index(c.ids("index"));
    std::vector<float> mean(static_cast<std::size_t>(ti.groups)), sd(static_cast<std::size_t>(ti.groups)), count(static_cast<std::size_t>(ti.groups));
    adv::group_mean_std(seq, scores.view1(), ti.layout(), mean, sd, count,
                        adv::group_mean_std_options::verl(c.param_or("eps", 1e-6)));
    const std::vector<std::int64_t> g{ti.groups};
    out.set("gidx", from_values(std::vector<double>(ti.gidx.begin(), ti.gidx.end()), {index_t(ti.gidx.size())}, "int64"));
    out.set("mean_g", from_values(std::vector<double>(mean.begin(), mean.end()), g, "float32"));
    out.set("std_g", from_values(std::vector<double>(sd.begin(), sd.end()), g, "float32"));
    out.set("count_g", from_values(std::vector<double>(count.begin(), count.end()), g, "float32"));
}

// core_algos.compute_rewards: scores - (old_log_prob - ref_log_prob) * kl_ratio
void compute_rewards(const case_context& c, produced& out) {
    const tensor s = c.input("token_level_scores"), lp = c.input("old_log_prob"), ref = c.input("ref_log_prob");
    tensor r = zeros({s.rows(), s.cols()});
    adv::kl_penalized_rewards(seq, s.view2(), lp.view2(), ref.view2(), view2(r.data, s.rows(), s.cols()), c.param("kl_ratio"));
    out.set("token_level_rewards", r);
}

}  // namespace

void register_verl(registry& r) {
    r.add("verl/compute_grpo_outcome_advantage", {grpo, float64_path, "grpo(grpo_options::verl(norm_adv_by_std_in_grpo, epsilon)) on sequence_scores, broadcast_to_tokens"});
    r.add("verl/compute_grpo_vectorized_outcome_advantage", {grpo_vectorized, float32_path, "grpo(grpo_options::verl_vectorized(norm, epsilon)) (float32 group statistics)"});
    r.add("verl/compute_rloo_outcome_advantage", {rloo, float64_path, "rloo(rloo_options::verl())"});
    r.add("verl/compute_rloo_vectorized_outcome_advantage", {rloo_vectorized, float64_path, "rloo(rloo_options::verl_vectorized())"});
    r.add("verl/compute_reinforce_plus_plus_outcome_advantage", {reinforce_plus_plus, float64_path, "reinforce_pp(reinforce_pp_options::verl(config.gamma))"});
    r.add("verl/compute_reinforce_plus_plus_baseline_outcome_advantage", {reinforce_plus_plus_baseline, float64_path, "reinforce_pp_baseline(reinforce_pp_baseline_options::verl()) on sequence_scores"});
    r.add("verl/compute_remax_outcome_advantage", {remax, float64_path, "remax(token_level_rewards, reward_baselines, mask)"});
    r.add("verl/compute_opo_outcome_advantage", {opo, float64_path, "opo(opo_options::verl()) with sequence_lengths(mask)"});
    r.add("verl/compute_grpo_passk_outcome_advantage", {grpo_passk, float64_path, "grpo_passk(passk_options::verl(config.norm_adv_by_std_in_grpo, epsilon))"});
    r.add("verl/compute_gpg_outcome_advantage", {gpg, float64_path, "gpg(gpg_options::verl(f_norm)) (alpha recomputed as verl does)"});
    r.add("verl/masked_whiten", {masked_whiten, float64_path, "masked_whiten(whiten_options::verl(shift_mean))"});
    r.add("verl/masked_mean", {masked_mean, float64_path, "masked_mean / masked_row_mean(masked_stats_options::verl())"});
    r.add("verl/masked_var", {masked_var, float64_path, "masked_var(masked_stats_options::verl(unbiased))"});
    r.add("verl/group_mean_std", {group_mean_std, float32_path, "as_torch_index layout + group_mean_std(group_mean_std_options::verl(eps))"});
    r.add("verl/compute_rewards", {compute_rewards, float64_path, "kl_penalized_rewards(coef = kl_ratio)"});
}

}  // namespace conformance
