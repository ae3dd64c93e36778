// Conformance mappings: token-level preference. TGDPO (dvlab-research/TGDPO dd88982:
// CustomDPOTrainer.dpo_loss and get_batch_loss_metrics) maps to preference::tgdpo with
// tgdpo_options::official, the logits-level pipeline through preference::token_log_probs and its
// backward; RTO (zkshan2002/RTO f2c1294: NaiveExperienceMaker._compute_dpo_rewards, models/utils.py
// compute_reward, the make_experience reward block) maps to preference::rto_dpo_rewards /
// rto_rewards with rto_options::official, then advantage::gae with the OpenRLHF preset (no whitening).

#include <string>
#include <vector>

#include <posttrain/advantage/gae.hpp>
#include <posttrain/preference/logits.hpp>
#include <posttrain/preference/rto.hpp>
#include <posttrain/preference/tgdpo.hpp>

#include "conformance.hpp"

namespace conformance {
namespace {

namespace pref = posttrain::preference;
namespace adv = posttrain::advantage;
using posttrain::exec::seq;

void require_sigmoid(const case_context& c, const char* key) {
    const std::string loss = c.params.at(key).get<std::string>();
    if (loss != "sigmoid") throw skip_case("loss type '" + loss + "' is not TGDPO (only sigmoid carries the token guidance)");
}

// CustomDPOTrainer.dpo_loss(policy, reference and guide per-token log-probs, masked by the harness as
// get_batch_logps does): per-pair losses, per-token rewards beta (p - q), d mean(losses) / d p.
void tgdpo_dpo_loss(const case_context& c, produced& out) {
    require_sigmoid(c, "loss_type");
    if (c.params.value("reference_free", false)) throw skip_case("reference_free TGDPO is not mapped");
    const tensor pw = c.input("policy_chosen_logps"), pl = c.input("policy_rejected_logps");
    const tensor qw = c.input("reference_chosen_logps"), ql = c.input("reference_rejected_logps");
    const tensor gw = c.input("reward_chosen_logps"), gl = c.input("reward_rejected_logps");
    const tensor mw = c.input("chosen_mask"), ml = c.input("rejected_mask");
    const index_t B = pw.rows(), Tw = pw.cols(), Tl = pl.cols();
    tensor losses = zeros({B}), rw = zeros({B, Tw}), rl = zeros({B, Tl}), dw = zeros({B, Tw}), dl = zeros({B, Tl});
    pref::tgdpo_outputs outs;
    outs.losses = losses.data;
    outs.chosen_token_rewards = view2(rw.data, B, Tw);
    outs.rejected_token_rewards = view2(rl.data, B, Tl);
    (void)pref::tgdpo(seq, pw.view2(), pl.view2(), qw.view2(), ql.view2(), gw.view2(), gl.view2(), mw.view2(), ml.view2(),
                      view2(dw.data, B, Tw), view2(dl.data, B, Tl), outs,
                      pref::tgdpo_options::official(c.param("beta"), c.param("tgdpo_alpha")));
    out.set("losses", losses);
    out.set("chosen_rewards", rw);
    out.set("rejected_rewards", rl);
    out.set("grad_policy_chosen_logps", dw);
    out.set("grad_policy_rejected_logps", dl);
}

// CustomDPOTrainer.get_batch_loss_metrics: batch = [chosen rows; rejected rows]; each model's logits
// go through get_batch_logps (shift, log_softmax, gather, * loss_mask), the TGDPO loss is the mean over
// pairs, and grad_policy_logits chains dL/dp back through the log-softmax.
void tgdpo_get_batch_loss_metrics(const case_context& c, produced& out) {
    require_sigmoid(c, "pref_loss");
    if (!c.params.value("use_ref_model", true)) throw skip_case("use_ref_model = false is not TGDPO");
    const tensor zp = c.input("policy_logits"), zr = c.input("reference_logits"), zg = c.input("reward_logits");
    const tensor y = c.input("labels");
    const index_t N = zp.shape[0], T = zp.shape[1], V = zp.shape[2], B = N / 2, L = T - 1;
    // loss_mask = labels[:, 1:] != -100, the mask get_batch_logps multiplies by.
    std::vector<double> mask(static_cast<std::size_t>(N * L));
    for (index_t i = 0; i < N; ++i)
        for (index_t t = 0; t < L; ++t) mask[std::size_t(i * L + t)] = y.ints[std::size_t(i * T + t + 1)] != -100 ? 1.0 : 0.0;
    auto logps = [&](const tensor& z, index_t first) {
        std::vector<double> lp(static_cast<std::size_t>(B * L));
        pref::token_log_probs(seq, shifted_logits(z, first, B), shifted_labels(y, first, B), view2(lp, B, L));
        return lp;
    };
    const auto pw = logps(zp, 0), pl = logps(zp, B), qw = logps(zr, 0), ql = logps(zr, B), gw = logps(zg, 0), gl = logps(zg, B);
    const posttrain::tensor_view<const double, 2> mw(mask.data(), B, L), ml(mask.data() + B * L, B, L);
    std::vector<double> dw(static_cast<std::size_t>(B * L)), dl(dw.size());
    const auto o = pref::tgdpo_options::official(c.param("pref_beta"), c.param("tgdpo_alpha"), c.param("pref_ftx"));
    const auto r = pref::tgdpo(seq, posttrain::tensor_view<const double, 2>(pw.data(), B, L), posttrain::tensor_view<const double, 2>(pl.data(), B, L),
                               posttrain::tensor_view<const double, 2>(qw.data(), B, L), posttrain::tensor_view<const double, 2>(ql.data(), B, L),
                               posttrain::tensor_view<const double, 2>(gw.data(), B, L), posttrain::tensor_view<const double, 2>(gl.data(), B, L),
                               mw, ml, view2(dw, B, L), view2(dl, B, L), {}, o);
    tensor grad = zeros({N, T, V});  // the last position of every row predicts nothing: gradient 0
    pref::token_log_probs_backward(seq, shifted_logits(zp, 0, B), shifted_labels(y, 0, B), posttrain::tensor_view<const double, 2>(dw.data(), B, L),
                                   shifted_grad(grad, 0, B));
    pref::token_log_probs_backward(seq, shifted_logits(zp, B, B), shifted_labels(y, B, B), posttrain::tensor_view<const double, 2>(dl.data(), B, L),
                                   shifted_grad(grad, B, B));
    out.set("loss", from_values({r.loss}, {}));
    out.set("grad_policy_logits", grad);
    out.set("metric_rewards_chosen", from_values({r.rewards.chosen}, {}));
    out.set("metric_rewards_rejected", from_values({r.rewards.rejected}, {}));
    out.set("metric_rewards_accuracies", from_values({r.rewards.accuracy}, {}));
    out.set("metric_rewards_margins", from_values({r.rewards.margin}, {}));
    out.set("metric_logps_chosen", from_values({r.rewards.logps_chosen}, {}));
    out.set("metric_logps_rejected", from_values({r.rewards.logps_rejected}, {}));
    out.set("metric_logps_ref_chosen", from_values({r.logps_ref_chosen}, {}));
    out.set("metric_logps_ref_rejected", from_values({r.logps_ref_rejected}, {}));
    // logits/chosen, logits/rejected: plain means of the policy's logits over each half of the batch.
    const std::size_t half = static_cast<std::size_t>(B * T * V);
    double sw = 0, sl = 0;
    for (std::size_t j = 0; j < half; ++j) {
        sw += zp.data[j];
        sl += zp.data[half + j];
    }
    out.set("metric_logits_chosen", from_values({half ? sw / double(half) : 0.0}, {}));
    out.set("metric_logits_rejected", from_values({half ? sl / double(half) : 0.0}, {}));
    out.tol = float32_path;  // concatenated_forward casts the logits to float32
}

pref::rto_options rto_options_of(const case_context& c, double kl_coef) {
    return pref::rto_options::official(c.param_or("dpo_reward_scale", 1.0), c.param_or("dpo_reward_clip", 0.0), kl_coef);
}

// NaiveExperienceMaker._compute_dpo_rewards(dpo_logps, base_logps, action_mask).
void rto_compute_dpo_rewards(const case_context& c, produced& out) {
    const tensor d = c.input("dpo_action_log_probs"), b = c.input("base_action_log_probs"), m = c.input("action_mask");
    tensor r = zeros({d.rows(), d.cols()});
    (void)pref::rto_dpo_rewards(seq, d.view2(), b.view2(), m.view2(), view2(r.data, d.rows(), d.cols()), rto_options_of(c, 0.0));
    out.set("dpo_rewards", r);
}

// models/utils.py compute_reward(r, kl_coef, log_probs, log_probs_base, action_mask, token_reward).
void rto_compute_reward(const case_context& c, produced& out) {
    const tensor r = c.input("r"), lp = c.input("log_probs"), base = c.input("log_probs_base"), m = c.input("action_mask");
    const index_t B = lp.rows(), T = lp.cols();
    tensor reward = zeros({B, T}), kl = zeros({B, T});
    const auto o = pref::rto_options::official(1.0, 0.0, c.param("kl_coef"));
    if (c.inputs.contains("token_reward")) {
        const tensor d = c.input("token_reward");
        (void)pref::rto_rewards(seq, r.view1(), lp.view2(), base.view2(), m.view2(), d.view2(), view2(reward.data, B, T), view2(kl.data, B, T), o);
    } else {
        (void)pref::rto_rewards(seq, r.view1(), lp.view2(), base.view2(), m.view2(), posttrain::none, view2(reward.data, B, T),
                                view2(kl.data, B, T), o);
    }
    out.set("reward", reward);
    out.set("kl", kl);
}

// make_experience, from `if self._use_dpo:` to get_advantages_and_returns: DPO token rewards,
// compute_reward with the actor and initial-model log-probs, then GAE (values and rewards masked, no
// whitening here).
void rto_make_experience_rewards(const case_context& c, produced& out) {
    const tensor lp = c.input("action_log_probs"), base = c.input("base_action_log_probs"), v = c.input("values");
    const tensor r = c.input("r"), m = c.input("action_mask");
    const index_t B = lp.rows(), T = lp.cols();
    const bool use_dpo = c.params.value("use_dpo", false);
    const auto o = rto_options_of(c, c.param("init_kl_coef"));
    tensor dpo = zeros({B, T}), reward = zeros({B, T}), kl = zeros({B, T});
    if (use_dpo) {
        (void)pref::rto_dpo_rewards(seq, c.input("dpo_action_log_probs").view2(), base.view2(), m.view2(), view2(dpo.data, B, T), o);
        (void)pref::rto_rewards(seq, r.view1(), lp.view2(), base.view2(), m.view2(), dpo.view2(), view2(reward.data, B, T),
                                view2(kl.data, B, T), o);
        out.set("dpo_rewards", dpo);
    } else {
        (void)pref::rto_rewards(seq, r.view1(), lp.view2(), base.view2(), m.view2(), posttrain::none, view2(reward.data, B, T),
                                view2(kl.data, B, T), o);
    }
    auto g = adv::gae_options::openrlhf(c.param("gamma"), c.param("lambd"));
    g.whiten = false;
    tensor a = zeros({B, T}), ret = zeros({B, T});
    (void)adv::gae(seq, reward.view2(), v.view2(), m.view2(), view2(a.data, B, T), view2(ret.data, B, T), g);
    out.set("reward", reward);
    out.set("kl", kl);
    out.set("advantages", a);
    out.set("returns", ret);
}

}  // namespace

void register_token_preference(registry& r) {
    r.add("tgdpo/dpo_loss", {tgdpo_dpo_loss, float64_path, "preference::tgdpo(tgdpo_options::official(beta, tgdpo_alpha)) on per-token log-probs"});
    r.add("tgdpo/get_batch_loss_metrics",
          {tgdpo_get_batch_loss_metrics, float32_path,
           "preference::token_log_probs on the shifted logits -> tgdpo(official(pref_beta, tgdpo_alpha, pref_ftx)) -> token_log_probs_backward"});
    r.deviations.push_back({"tgdpo/get_batch_loss_metrics", "B2_*", "tgdpo_batch_above_one",
                            "TGDPO's concatenated_forward divides [B, T-1] per-token log-probs by [B] lengths, which only broadcasts "
                            "for B = 1 (the released config), so upstream raises RuntimeError; posttrain computes every pair (the "
                            "per-pair loss does not depend on the batch size)"});
    r.deviations.push_back({"tgdpo/get_batch_loss_metrics", "*pref_ftx*", "tgdpo_sft_term",
                            "with pref_ftx > 0 upstream adds a [1, T-1] per-token SFT tensor in place to the [1] losses and raises "
                            "RuntimeError; posttrain adds the spec's SFT term pref_ftx * (-mean chosen log-prob) per pair "
                            "(tgdpo_options::sft_weight)"});
    r.add("rto/NaiveExperienceMaker._compute_dpo_rewards",
          {rto_compute_dpo_rewards, float64_path, "preference::rto_dpo_rewards(rto_options::official(scale, clip))"});
    r.add("rto/compute_reward", {rto_compute_reward, float64_path, "preference::rto_rewards(rto_options::official(1, 0, kl_coef))"});
    r.add("rto/make_experience_rewards",
          {rto_make_experience_rewards, float64_path,
           "rto_dpo_rewards -> rto_rewards(official(scale, clip, init_kl_coef)) -> advantage::gae(openrlhf(gamma, lambd), whiten = false)"});
}

}  // namespace conformance
