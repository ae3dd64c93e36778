// Conformance mappings for issue 8's reward and advantage shaping: the unlikeliness reward
// (AndreHe02/rewarding-unlikely-release ca1cff0), COPO (hijih/copo-code f66883f) and C-GRPO's rubric
// reward mixing (THUDM/CaRR c97e7e8). Each mapping is how to get the paper code's numbers from
// posttrain: a shaping function composed with the existing estimators and losses.

#include <map>
#include <string>

#include <posttrain/advantage/copo.hpp>
#include <posttrain/advantage/rubric.hpp>
#include <posttrain/advantage/unlikeliness.hpp>

#include "conformance.hpp"

namespace conformance {
namespace {

namespace adv = posttrain::advantage;
namespace pl = posttrain::policy_loss;
using posttrain::exec::seq;

void set_metric(produced& out, const std::string& name, double v) { out.set(name, from_values({v}, {})); }

// Strings -> dense integer ids by first appearance: the caller's side of posttrain's id inputs.
std::vector<std::int64_t> dense_ids(const json& list) {
    std::map<std::string, std::int64_t> seen;
    std::vector<std::int64_t> ids;
    for (const auto& v : list) {
        const std::string k = v.is_string() ? v.get<std::string>() : v.dump();
        ids.push_back(seen.emplace(k, std::int64_t(seen.size())).first->second);
    }
    return ids;
}

// ---- Rewarding the Unlikely: RayLeanTrainer._compute_advantages ----
// The response mask is the last response_length columns of attention_mask; the rewards are shaped by
// unlikeliness_rewards (official: float32 multiplier), then verl's loop GRPO (singleton = raw reward
// over float32 1 + eps) and broadcast over the response.
void unlikely_advantages(const case_context& c, produced& out) {
    const tensor r = c.input("rewards"), lp = c.input("old_log_probs"), am = c.input("attention_mask");
    const index_t N = r.numel(), R = lp.cols(), W = am.cols();
    const index_t e[2] = {N, R}, s[2] = {W, 1};
    const posttrain::tensor_view<const std::int64_t, 2> mask(am.ints.data() + (W - R), e, s);
    const auto groups = group_by(c.ids("uid"));
    std::vector<double> shaped(static_cast<std::size_t>(N)), a(static_cast<std::size_t>(N));
    (void)adv::unlikeliness_rewards(seq, r.view1(), lp.view2(), mask, groups, shaped,
                                    adv::unlikeliness_options::official(c.param("rank_penalty")));
    (void)adv::grpo(seq, shaped, groups, a, adv::grpo_options::verl(true, c.param_or("epsilon", 1e-6)));
    tensor A = zeros({N, R});
    adv::broadcast_to_tokens(seq, a, mask, view2(A.data, N, R));
    out.set("advantages", A);
    out.set("rewards_after_call", from_values(a, {N}));
}


// ---- C-GRPO: the rubric block of generate_and_rm_group (slime rollout) ----
// One group of samples of one prompt. --use-rubric-reward-nobfs replaces the rubric reward by
// rubric_reward(connectivity = false) over the judge's is_supported flags; the block is skipped when
// the samples carry no rubric_reward (rewards stay as given).
void carr_rubric_mix(const case_context& c, produced& out) {
    const tensor ro = c.input("outcome_reward"), in = c.input("reward_in");
    const index_t N = ro.numel();
    if (!c.inputs.contains("rubric_reward")) {
        out.set("reward", in);
        return;
    }
    std::vector<double> rub = c.input("rubric_reward").data;
    if (c.params.at("use_rubric_reward_nobfs").get<bool>()) {
        const json& scores = c.inputs.at("rubric_scores");
        for (index_t i = 0; i < N; ++i) {
            std::vector<unsigned char> sup;
            for (const auto& kv : scores.at(std::size_t(i)).items()) {
                const json& v = kv.value().at("is_supported");
                sup.push_back(v.is_boolean() ? v.get<bool>() : number(v) == 1);
            }
            const std::vector<std::int64_t> off(sup.size() + 1, 0), ent;
            rub[std::size_t(i)] = adv::rubric_reward(seq, sup, off, ent, 0, posttrain::none, {.connectivity = false}).reward;
        }
    }
    adv::rubric_mix_options o;
    o.ratio = c.param("rubric_reward_ratio");
    o.normalize = c.params.at("normalize_rubric_reward").get<bool>();
    o.normalize_positive_branch = false;  // CaRR's code: the positive branch mixes the raw reward
    if (c.params.at("rubric_only_positive").get<bool>()) o.branch = adv::rubric_branch::only_positive;
    else if (c.params.at("rubric_only_negative").get<bool>()) o.branch = adv::rubric_branch::only_negative;
    std::vector<double> r(static_cast<std::size_t>(N));
    adv::rubric_mix(seq, ro.view1(), rub, posttrain::uniform_groups{N}, r, o);
    out.set("reward", from_values(r, {N}));
    out.set("rubric_reward_after", from_values(rub, {N}));
}

// ---- C-GRPO: step 3 (BFS) of the reward server's get_rubric_reward ----
// Entity names -> integer ids (the caller's hashing); E0 is the answer entity.
void carr_rubric_bfs(const case_context& c, produced& out) {
    const json& rubrics = c.inputs.at("rubric_scores");
    std::map<std::string, std::int64_t> names{{"E0", 0}};
    std::vector<unsigned char> sup;
    std::vector<std::int64_t> off{0}, ent;
    for (const auto& r : rubrics) {
        const json& v = r.at("is_supported");
        sup.push_back(v.is_boolean() ? v.get<bool>() : number(v) == 1);
        for (const auto& e : r.at("entities")) ent.push_back(names.emplace(e.get<std::string>(), std::int64_t(names.size())).first->second);
        off.push_back(std::int64_t(ent.size()));
    }
    const index_t R = index_t(sup.size());
    std::vector<double> connected(static_cast<std::size_t>(R));
    const auto res = adv::rubric_reward(seq, sup, off, ent, 0, connected);
    set_metric(out, "reward", res.reward);
    tensor conn = from_values(connected, {R}, "bool"), score = from_values(connected, {R}, "int64");
    for (double x : connected) conn.ints.push_back(std::int64_t(x)), score.ints.push_back(std::int64_t(x));
    out.set("connected_to_answer", conn);
    out.set("score", score);
}

// ---- COPO: compute_score_global (one prompt's answers and rewards) ----
void copo_score_global(const case_context& c, produced& out) {
    const tensor r = c.input("local_reward");
    const index_t N = r.numel();
    const auto answers = dense_ids(c.inputs.at("extract_answer"));
    double R = 0, H = 0;
    adv::copo_group_scores(seq, r.view1(), answers, posttrain::uniform_groups{N}, posttrain::tensor_view<double, 1>(&R, 1),
                           posttrain::tensor_view<double, 1>(&H, 1), adv::copo_options::official(c.params.at("reward_coef_flg").get<bool>()));
    set_metric(out, "global_reward", R);
    set_metric(out, "entropy", H);
}

// ---- COPO: compute_grpo_outcome_advantage_with_global ----
// Local: verl's loop GRPO on the row sums of token_level_rewards. Global: copo_global_advantages
// (official). local_reward is the raw score only when norm_adv_by_std_in_grpo (zeros otherwise: the
// reference fills it in that branch alone).
void copo_advantages(const case_context& c, produced& out) {
    const tensor tr = c.input("token_level_rewards"), m = c.input("response_mask");
    const index_t N = tr.rows(), T = tr.cols();
    const bool norm = c.params.at("norm_adv_by_std_in_grpo").get<bool>();
    const double eps = c.param_or("epsilon", 1e-6);
    std::vector<double> scores(static_cast<std::size_t>(N)), local(scores.size()), global(scores.size()), H(scores.size());
    adv::sequence_scores(seq, tr.view2(), scores);
    const auto groups = group_by(c.ids("index"));
    const auto answers = dense_ids(c.inputs.at("extract_answer"));
    (void)adv::grpo(seq, scores, groups, local, adv::grpo_options::verl(norm, eps));
    const auto o = adv::copo_options::official(c.params.at("reward_coef_flg").get<bool>(), norm, eps);
    (void)adv::copo_global_advantages(seq, scores, answers, groups, global, H, o);
    // global_rewards per row: the group's R_g.
    const auto layout = posttrain::detail::make_layout(groups, N, {"map_shaping", "groups"});
    std::vector<double> Rg(static_cast<std::size_t>(layout.num_groups())), rows_R(scores.size());
    adv::copo_group_scores(seq, scores, answers, groups, Rg, posttrain::none, o);
    for (index_t g = 0; g < layout.num_groups(); ++g)
        for (index_t j = 0; j < layout.size(g); ++j) rows_R[std::size_t(layout.rows(g)(j))] = Rg[std::size_t(g)];
    tensor A = zeros({N, T}), GA = zeros({N, T});
    adv::broadcast_to_tokens(seq, local, m.view2(), view2(A.data, N, T));
    adv::broadcast_to_tokens(seq, global, m.view2(), view2(GA.data, N, T));
    out.set("advantages", A);
    out.set("returns", A);
    out.set("global_adv", GA);
    out.set("reward_entropy", from_values(H, {N}));
    out.set("global_rewards", from_values(rows_R, {N}));
    out.set("local_reward", from_values(norm ? scores : std::vector<double>(scores.size(), 0.0), {N}));
}

// ---- COPO: compute_policy_loss_with_global ----
// copo_blend_weights (the forced modes test the first token's advantage) and copo_loss with the
// official options; the metrics are old verl's masked means (sum / (count + 1e-8)).
void copo_policy_loss(const case_context& c, produced& out) {
    const tensor lr = c.input("local_reward"), old = c.input("old_log_prob"), lp = c.input("log_prob"),
                 a = c.input("advantages"), m = c.input("response_mask"), ga = c.input("global_adv"),
                 H = c.input("reward_entropy");
    const index_t B = lp.rows(), T = lp.cols();
    const std::string flag = c.params.at("global_flg").get<std::string>();
    static const std::map<std::string, adv::copo_blend> modes = {
        {"no-global", adv::copo_blend::no_global},         {"only-global", adv::copo_blend::only_global},
        {"only-soft", adv::copo_blend::only_soft},         {"only-soft-with-coef", adv::copo_blend::only_soft},
        {"soft-with-forced", adv::copo_blend::soft_with_forced}, {"only-forced", adv::copo_blend::only_forced},
        {"soft-with-zero", adv::copo_blend::soft_with_zero}, {"only-zero", adv::copo_blend::only_zero}};
    adv::copo_blend_options bo;
    bo.mode = modes.at(flag);
    bo.k = c.param("k"), bo.b = c.param("b");
    std::vector<double> first(static_cast<std::size_t>(B)), w(first.size()), soft(first.size());
    for (index_t i = 0; i < B; ++i) first[std::size_t(i)] = a.data[std::size_t(i * T)];
    adv::copo_blend_weights(seq, H.view1(), first, lr.view1(), w, bo);
    adv::copo_blend_weights(seq, H.view1(), first, lr.view1(), soft, {adv::copo_blend::only_soft, bo.k, bo.b});
    const double clip = c.param("cliprange");
    auto o = pl::copo_loss_options::official(verl_agg_mode(c.params.at("loss_agg_mode").get<std::string>()),
                                             c.param_or("cliprange_low", clip), c.param_or("cliprange_high", clip),
                                             c.param_or("clip_ratio_c", 3.0));
    if (flag == "only-soft-with-coef") o.global_coef = c.param("global_loss_coef");
    if (o.loss.aggregation.mode == pl::aggregation::token_mean)
        o.loss.aggregation.global_tokens = pl::count_tokens(seq, m.view2()).tokens + 1e-8;
    tensor g = zeros(lp.shape);
    const auto res = pl::copo_loss(seq, lp.view2(), old.view2(), a.view2(), ga.view2(), m.view2(), w, view2(g.data, B, T), o);
    set_metric(out, "pg_loss", res.loss);
    out.set("grad_log_prob", g);
    auto mean = [](double s, double n) { return s / (n + 1e-8); };
    const auto& L = res.local.sums;
    const auto& G = res.global.sums;
    set_metric(out, "pg_clipfrac", mean(L.clipped_low + L.clipped_high, L.tokens));
    set_metric(out, "pg_clipfrac_lower", mean(L.dual_clipped, L.tokens));
    set_metric(out, "ppo_kl", mean(L.neg_log_ratio, L.tokens));
    set_metric(out, "global_pg_clipfrac", mean(G.clipped_low + G.clipped_high, G.tokens));
    set_metric(out, "global_pg_clipfrac_lower", mean(G.dual_clipped, G.tokens));
    // global_loss_weight as returned: the modified w in the blending modes, the plain sigmoid where the
    // mode ignores it; [B, T] (broadcast) in the two zero modes.
    std::vector<double> shown = (flag == "no-global" || flag == "only-global" || flag == "only-soft-with-coef") ? soft : w;
    if (flag == "soft-with-zero" || flag == "only-zero") {
        std::vector<double> wide(static_cast<std::size_t>(B * T));
        for (index_t i = 0; i < B; ++i)
            for (index_t t = 0; t < T; ++t) wide[std::size_t(i * T + t)] = shown[std::size_t(i)];
        out.set("global_loss_weight", from_values(wide, {B, T}));
    } else {
        out.set("global_loss_weight", from_values(shown, {B}));
    }
}

}  // namespace

void register_shaping(registry& r) {
    r.add("unlikely/_compute_advantages",
          {unlikely_advantages, tolerance{1e-7, 1e-9},
           "unlikeliness_rewards(unlikeliness_options::official(rank_penalty)) then grpo(grpo_options::verl()), "
           "broadcast_to_tokens over attention_mask[:, -R:]"});
    r.add("copo/compute_score_global", {copo_score_global, float32_path,
                                        "copo_group_scores(copo_options::official(reward_coef_flg)) (float32 entropy)"});
    r.add("copo/compute_grpo_outcome_advantage_with_global",
          {copo_advantages, float32_path,
           "grpo(grpo_options::verl(norm, eps)) + copo_global_advantages(copo_options::official(reward_coef_flg, norm, eps))"});
    r.add("copo/compute_policy_loss_with_global",
          {copo_policy_loss, float64_path,
           "copo_blend_weights(global_flg, k, b) + policy_loss::copo_loss(copo_loss_options::official(loss_agg_mode, clip...))",
           {{"pg_losses", "the unaggregated local token-loss matrix: posttrain returns the reduced loss and its gradient"},
            {"global_pg_losses", "the unaggregated global token-loss matrix: posttrain returns the reduced loss and its gradient"}}});
    r.add("carr/rubric_mix", {carr_rubric_mix, float64_path,
                              "rubric_mix(ratio, normalize, only_positive/only_negative, normalize_positive_branch = false); "
                              "nobfs: rubric_reward(connectivity = false)"});
    r.add("carr/rubric_bfs_reward", {carr_rubric_bfs, float64_path, "rubric_reward(supported, entity CSR, answer entity E0)"});
}

}  // namespace conformance
