// A tour of the outcome-advantage family: one small, hand-checkable call per algorithm. The docs
// pages under docs/algorithms/ quote the blocks between the "// [name]" markers, and show the output
// this program prints.

#include <posttrain/posttrain.hpp>

#include <cstdint>
#include <cstdio>
#include <vector>

namespace pt = posttrain;
namespace adv = posttrain::advantage;

namespace {

template <class V>
void print(const char* label, const V& v) {
    std::printf("  %-22s", label);
    for (auto x : v) std::printf(" %+.4f", double(x));
    std::printf("\n");
}

void print_rows(const char* label, const std::vector<double>& v, int cols) {
    for (std::size_t i = 0; i < v.size(); i += std::size_t(cols)) {
        std::printf("  %-22s", i == 0 ? label : "");
        for (int t = 0; t < cols; ++t) std::printf(" %+.4f", v[i + std::size_t(t)]);
        std::printf("\n");
    }
}

void tour_grpo() {
    std::printf("grpo\n");
    // [grpo]
    std::vector<double> rewards = {1, 0, 0, 1,   0, 0, 0, 0,   1, 1, 0, 1};  // 3 prompts x 4 rollouts
    std::vector<double> a(rewards.size());
    const pt::uniform_groups groups{4};

    auto stats = adv::grpo(pt::exec::seq, rewards, groups, a);  // (r - mean) / (std + 1e-6)
    print("grpo", a);                                                  // zero-variance group -> 0
    std::printf("  zero-variance groups: %lld\n", (long long)stats.zero_variance_groups);

    (void)adv::grpo(pt::exec::seq, rewards, groups, a, adv::grpo_options::dr_grpo());  // r - mean
    print("dr_grpo", a);

    (void)adv::grpo(pt::exec::seq, rewards, groups, a, {.std_scale = adv::scale::batch});  // LitePPO
    print("batch std", a);

    (void)adv::grpo(pt::exec::seq, rewards, groups, a, {.std_scale = adv::scale::none, .leave_one_out = true});
    print("leave-one-out", a);  // = RLOO

    (void)adv::grpo(pt::exec::seq, rewards, groups, a, adv::grpo_options::trl(adv::scale::group));
    print("trl preset", a);
    // [grpo]
}

void tour_rloo() {
    std::printf("rloo\n");
    // [rloo]
    std::vector<double> rewards = {1, 0, 0, 1,   0.5};  // a group of 4 and a singleton
    std::vector<std::int64_t> offsets = {0, 4, 5};
    std::vector<double> a(rewards.size());

    (void)adv::rloo(pt::exec::seq, rewards, pt::ragged(offsets), a);  // singleton -> 0
    print("rloo", a);
    (void)adv::rloo(pt::exec::seq, rewards, pt::ragged(offsets), a, adv::rloo_options::verl());
    print("rloo verl()", a);  // singleton keeps its raw reward
    // [rloo]
}

void tour_reinforce_pp() {
    std::printf("reinforce_pp\n");
    // [reinforce_pp]
    // Two responses of up to 3 tokens; the outcome reward sits on the last valid token.
    std::vector<double> token_rewards = {0, 0, 1,    0, 2, 0};
    std::vector<double> mask          = {1, 1, 1,    1, 1, 0};
    std::vector<double> a(6), g(6);
    const pt::tensor_view<const double, 2> R(token_rewards.data(), 2, 3), M(mask.data(), 2, 3);

    pt::moments_result w = adv::reinforce_pp(pt::exec::seq, R, M, pt::tensor_view<double, 2>(a.data(), 2, 3),
                                             pt::tensor_view<double, 2>(g.data(), 2, 3),
                                             adv::reinforce_pp_options::verl(/*gamma=*/0.5));
    print_rows("returns (gamma 0.5)", g, 3);
    print_rows("advantages", a, 3);
    std::printf("  whitening: mean %.4f var %.4f tokens %.0f\n", w.mean, w.variance, w.count);

    // REINFORCE++-baseline: sequence rewards, group-mean-centred, then whitened over the batch.
    std::vector<double> rewards = {1, 0, 0, 0};  // two groups of two
    std::vector<double> mask4(4 * 2, 1.0), b(4 * 2);
    (void)adv::reinforce_pp_baseline(pt::exec::seq, rewards, pt::uniform_groups{2},
                                     pt::tensor_view<const double, 2>(mask4.data(), 4, 2),
                                     pt::tensor_view<double, 2>(b.data(), 4, 2));
    print_rows("baseline advantages", b, 2);
    // [reinforce_pp]
}

void tour_remax() {
    std::printf("remax\n");
    // [remax]
    std::vector<double> token_rewards = {0, 0, 1,    0, 0, 0};
    std::vector<double> mask          = {1, 1, 1,    1, 1, 0};
    std::vector<double> greedy        = {0.5, 0.5};  // rewards of the greedy decodes
    std::vector<double> a(6);
    adv::remax(pt::exec::seq, pt::tensor_view<const double, 2>(token_rewards.data(), 2, 3), greedy,
               pt::tensor_view<const double, 2>(mask.data(), 2, 3), pt::tensor_view<double, 2>(a.data(), 2, 3), pt::none);
    print_rows("remax", a, 3);
    // [remax]
}

void tour_opo() {
    std::printf("opo\n");
    // [opo]
    std::vector<double> rewards = {1, 0, 0, 1};
    std::vector<double> lengths = {10, 30, 20, 40};  // e.g. from sequence_lengths
    std::vector<double> a(4);
    (void)adv::opo(pt::exec::seq, rewards, lengths, pt::uniform_groups{4}, a);
    print("opo", a);  // baseline = (10*1 + 40*1) / 100 = 0.5
    // [opo]
}

void tour_passk() {
    std::printf("passk\n");
    // [passk]
    std::vector<double> rewards = {0.2, 0.9, 0.5, 0.9};
    std::vector<double> a(4);
    (void)adv::grpo_passk(pt::exec::seq, rewards, pt::uniform_groups{4}, a, {.norm_by_std = false});
    print("passk (no std)", a);  // first of the tied maxima gets 0.9 - 0.9
    rewards = {0.2, 0.9, 0.5, 0.3};
    (void)adv::grpo_passk(pt::exec::seq, rewards, pt::uniform_groups{4}, a);
    print("passk", a);  // (0.9 - 0.5) / (std + 1e-6)
    // [passk]
}

void tour_gpg() {
    std::printf("gpg\n");
    // [gpg]
    std::vector<double> rewards = {1, 0, 0, 0,   0, 0, 0, 0};
    std::vector<double> a(8);
    (void)adv::gpg(pt::exec::seq, rewards, pt::uniform_groups{4}, a);
    print("gpg", a);  // alpha = 8 / max(1 nonzero, 1) = 8; (r - mean) * alpha / f_norm
    // [gpg]
}

void tour_gdpo() {
    std::printf("gdpo\n");
    // [gdpo]
    // Two reward components per rollout (correctness, format), one group of four.
    std::vector<double> rewards = {1, 1,    0, 1,    0, 1,    1, 0};  // [N=4, K=2] row-major
    const pt::tensor_view<const double, 2> R(rewards.data(), 4, 2);
    std::vector<double> a(4), combined(4);

    (void)adv::gdpo(pt::exec::seq, R, pt::uniform_groups{4}, a, combined, adv::gdpo_options::gdpo({1.0, 0.5}));
    print("gdpo S", combined);  // weighted sum of per-component group z-scores
    print("gdpo A", a);         // batch z-score of S

    adv::gdpo_options sum_first = adv::gdpo_options::gdpo({1.0, 0.5});
    sum_first.mode = adv::aggregation::sum_then_normalize;
    (void)adv::gdpo(pt::exec::seq, R, pt::uniform_groups{4}, a, combined, sum_first);
    print("sum_then_normalize S", combined);  // weighted sum of raw rewards
    print("sum_then_normalize A", a);         // GRPO of S
    // [gdpo]
}

void tour_whiten() {
    std::printf("whiten\n");
    // [whiten]
    std::vector<double> x = {1, 2, 3,    4, 5, 6};
    std::vector<double> m = {1, 1, 0,    1, 1, 1};
    const pt::tensor_view<const double, 2> X(x.data(), 2, 3), M(m.data(), 2, 3);
    std::vector<double> out(6), row_mean(2);

    std::printf("  masked_mean %.4f  masked_var %.4f\n", adv::masked_mean(pt::exec::seq, X, M),
                adv::masked_var(pt::exec::seq, X, M));  // over the 5 valid tokens, unbiased
    adv::masked_row_mean(pt::exec::seq, X, M, row_mean);
    print("masked_row_mean", row_mean);

    (void)adv::masked_whiten(pt::exec::seq, X, M, pt::tensor_view<double, 2>(out.data(), 2, 3),
                             {.mask_output = true});
    print_rows("masked_whiten", out, 3);

    adv::masked_normalize(pt::exec::seq, X, M, pt::tensor_view<double, 2>(out.data(), 2, 3));
    print_rows("masked_normalize", out, 3);  // per row, biased variance
    // [whiten]
}

void tour_shaping() {
    std::printf("shaping\n");
    // [shaping]
    std::vector<double> rewards = {3.5, -12.0};
    std::vector<double> clipped(2);
    adv::clip_rewards(pt::exec::seq, rewards, clipped, -10.0, 10.0);
    print("clip_rewards", clipped);

    // The outcome reward on the last valid token, minus kl_coef * kl on every token (OpenRLHF).
    std::vector<double> kl   = {0.1, 0.2, 0.3,    0.1, 0.1, 0.1};
    std::vector<double> mask = {1, 1, 1,          1, 1, 0};
    std::vector<double> out(6);
    adv::outcome_token_rewards(pt::exec::seq, clipped, pt::tensor_view<const double, 2>(kl.data(), 2, 3),
                               pt::tensor_view<const double, 2>(mask.data(), 2, 3),
                               pt::tensor_view<double, 2>(out.data(), 2, 3),
                               adv::outcome_token_reward_options::openrlhf(/*kl_coef=*/0.5));
    print_rows("outcome_token_rewards", out, 3);

    // verl compute_rewards: token_scores - coef * (logp - ref_logp).
    std::vector<double> scores = {0, 0, 1,    0, 1, 0};
    std::vector<double> logp   = {-1, -1, -1, -2, -2, -2}, ref = {-1.5, -1, -0.5, -2, -2.5, -2};
    adv::kl_penalized_rewards(pt::exec::seq, pt::tensor_view<const double, 2>(scores.data(), 2, 3),
                              pt::tensor_view<const double, 2>(logp.data(), 2, 3),
                              pt::tensor_view<const double, 2>(ref.data(), 2, 3),
                              pt::tensor_view<double, 2>(out.data(), 2, 3), /*coef=*/0.1);
    print_rows("kl_penalized_rewards", out, 3);
    // [shaping]
}

void tour_filters() {
    std::printf("filters\n");
    // [filters]
    std::vector<double> rewards = {1, 0, 1,   1, 1, 1,   0, 0, 0,   1};
    std::vector<std::int64_t> offsets = {0, 3, 6, 9, 10, 10};  // the last group is empty
    std::vector<std::uint8_t> keep(5);
    const pt::index_t kept = adv::zero_variance_filter(pt::exec::seq, rewards, pt::ragged(offsets), keep);
    print("keep", keep);  // mixed: keep; all 1 / all 0: drop; singleton: keep; empty: drop
    std::printf("  kept %lld of 5 groups\n", (long long)kept);
    // [filters]
}

void tour_groups() {
    std::printf("groups\n");
    // [groups]
    std::vector<double> rewards = {1, 0, 1, 1, 0, 0};
    std::vector<double> a(6);

    // Rows arrive in any order; uids say which prompt each belongs to.
    std::vector<std::int64_t> uid = {30, 10, 30, 20, 10, 30};
    const pt::grouping_result g = pt::grouping::from_ids(pt::exec::seq, uid);
    std::printf("  %lld groups, ids", (long long)g.num_groups());
    for (auto id : g.ids) std::printf(" %lld", (long long)id);
    std::printf(", offsets");
    for (auto o : g.offsets) std::printf(" %lld", (long long)o);
    std::printf("\n");
    auto stats = adv::grpo(pt::exec::seq, rewards, g, a);  // results land in the original row order
    print("grpo by uid", a);
    std::printf("  singleton groups: %lld\n", (long long)stats.singleton_groups);

    // String ids (e.g. prompt text or a UUID) are hashed to 64 bits; collisions are detected.
    std::vector<std::string> prompt = {"2+2", "x^2", "2+2", "sin", "x^2", "2+2"};
    const pt::grouping_result h = pt::grouping::from_string_ids(pt::exec::seq, prompt);
    (void)adv::grpo(pt::exec::par, rewards, h, a);  // exec::par: bitwise equal to exec::seq
    print("grpo by string id", a);
    // [groups]
}

}  // namespace

int main() {
    tour_grpo();
    tour_rloo();
    tour_reinforce_pp();
    tour_remax();
    tour_opo();
    tour_passk();
    tour_gpg();
    tour_gdpo();
    tour_whiten();
    tour_shaping();
    tour_filters();
    tour_groups();
}
