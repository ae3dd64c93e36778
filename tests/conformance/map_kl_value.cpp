// KL estimators and controllers, the entropy bonus and the clipped value loss: verl kl_penalty,
// AdaptiveKLController, entropy_from_logits, compute_entropy_loss, compute_value_loss (core_algos.py /
// torch_functional.py, b178a3c); OpenRLHF compute_approx_kl and ValueLoss (3c3be62); RTO's ValueLoss
// (the older OpenRLHF loss, f2c1294).

#include "conformance.hpp"

#include <limits>

#include <posttrain/policy_loss/entropy.hpp>
#include <posttrain/policy_loss/kl.hpp>
#include <posttrain/policy_loss/value_loss.hpp>

namespace conformance {
namespace {

namespace pl = posttrain::policy_loss;
using posttrain::exec::seq;

std::string str_param(const case_context& c, const char* name) { return c.params.at(name).get<std::string>(); }

// kl_penalty(logprob, ref_logprob, kl_penalty): the estimate per token and d sum(kl) / d logprob.
void verl_kl_penalty(const case_context& c, produced& out) {
    const tensor lp = c.input("logprob"), ref = c.input("ref_logprob");
    const auto o = pl::kl_options::verl(str_param(c, "kl_penalty"));  // "full" throws invalid_argument
    tensor kl = zeros(lp.shape), g = zeros(lp.shape);
    pl::kl_penalty(seq, lp.view2(), ref.view2(), view2(kl.data, lp.rows(), lp.cols()), view2(g.data, lp.rows(), lp.cols()), o);
    out.set("kl", kl);
    out.set("grad_logprob", g);
}

// compute_approx_kl(log_probs, log_probs_base, kl_estimator): OpenRLHF computes in float32 and returns
// float32; posttrain computes in double and writes the caller's float32 output.
void openrlhf_compute_approx_kl(const case_context& c, produced& out) {
    const tensor lp = c.input("log_probs"), ref = c.input("log_probs_base");
    const auto o = pl::kl_options::openrlhf(str_param(c, "kl_estimator"));
    std::vector<float> kl(lp.data.size());
    tensor g = zeros(lp.shape);
    pl::kl_penalty(seq, lp.view2(), ref.view2(), posttrain::tensor_view<float, 2>(kl.data(), lp.rows(), lp.cols()),
                   view2(g.data, lp.rows(), lp.cols()), o);
    out.set("kl", from_values(std::vector<double>(kl.begin(), kl.end()), lp.shape, "float32"));
    out.set("grad_log_probs", g);
}

// AdaptiveKLController(init_kl_coef, target_kl, horizon), then update(current_kl, n_steps) per entry.
void verl_adaptive_kl_controller(const case_context& c, produced& out) {
    auto ctl = pl::adaptive_kl_controller::verl(c.param("init_kl_coef"), c.param("target_kl"), c.param("horizon"));
    std::vector<double> values;
    for (const auto& u : c.inputs.at("updates")) {
        ctl.update(number(u.at(0)), number(u.at(1)));
        values.push_back(ctl.value);
    }
    out.set("values_after_each_update", from_values(values, {std::int64_t(values.size())}));
}


posttrain::tensor_view<const double, 3> view3(const tensor& t) {
    return posttrain::tensor_view<const double, 3>(t.data.data(), t.shape.at(0), t.shape.at(1), t.shape.at(2));
}
posttrain::tensor_view<double, 3> view3(tensor& t) {
    return posttrain::tensor_view<double, 3>(t.data.data(), t.shape.at(0), t.shape.at(1), t.shape.at(2));
}

// entropy_from_logits(logits): per-token entropy and d sum(entropy) / d logits.
void verl_entropy_from_logits(const case_context& c, produced& out) {
    const tensor z = c.input("logits");
    tensor h = zeros({z.shape.at(0), z.shape.at(1)}), g = zeros(z.shape);
    pl::entropy_from_logits(seq, view3(z), view2(h.data, h.rows(), h.cols()), view3(g), 1.0);
    out.set("entropy", h);
    out.set("grad_logits", g);
}

// compute_entropy_loss(logits, response_mask, loss_agg_mode) = agg_loss(entropy_from_logits(logits), ...).
void verl_compute_entropy_loss(const case_context& c, produced& out) {
    const tensor z = c.input("logits"), m = c.input("response_mask");
    tensor g = zeros(z.shape);
    const auto agg = pl::aggregation_options::verl(verl_agg_mode(str_param(c, "loss_agg_mode")));
    const auto r = pl::entropy_loss(seq, view3(z), m.view2(), posttrain::none, view3(g), agg);
    out.set("entropy_loss", from_values({r.loss}, {}));
    out.set("grad_logits", g);
}

// compute_value_loss(vpreds, returns, values, response_mask, cliprange_value, loss_agg_mode).
void verl_compute_value_loss(const case_context& c, produced& out) {
    const tensor v = c.input("vpreds"), R = c.input("returns"), vo = c.input("values"), m = c.input("response_mask");
    tensor g = zeros(v.shape);
    const auto o = pl::value_loss_options::verl(c.param("cliprange_value"), verl_agg_mode(str_param(c, "loss_agg_mode")));
    const auto r = pl::value_loss(seq, v.view2(), vo.view2(), R.view2(), m.view2(), view2(g.data, v.rows(), v.cols()), o);
    out.set("vf_loss", from_values({r.loss}, {}));
    out.set("vf_clipfrac", from_values({r.clipfrac}, {}));
    out.set("grad_vpreds", g);
}

// ValueLoss(clip_eps, token_level_loss)(values, old_values, returns, action_mask); clip_eps None = no clip.
void openrlhf_value_loss(const case_context& c, produced& out) {
    const tensor v = c.input("values"), vo = c.input("old_values"), R = c.input("returns"), m = c.input("action_mask");
    const json& init = c.params.at("init");
    const double clip = init.at("clip_eps").is_null() ? std::numeric_limits<double>::infinity() : number(init.at("clip_eps"));
    tensor g = zeros(v.shape);
    const auto o = pl::value_loss_options::openrlhf(clip, init.at("token_level_loss").get<bool>());
    const auto r = pl::value_loss(seq, v.view2(), vo.view2(), R.view2(), m.view2(), view2(g.data, v.rows(), v.cols()), o);
    out.set("loss", from_values({r.loss}, {}));
    out.set("grad_values", g);
}

// RTO's (older OpenRLHF) ValueLoss: 0.5 * masked_mean(L, mask, dim=-1).mean(), masked_mean without an
// epsilon and every row a sequence: seq_mean_token_mean under aggregation_options::verl_agent.
void rto_value_loss(const case_context& c, produced& out) {
    const tensor v = c.input("values"), vo = c.input("old_values"), R = c.input("returns"), m = c.input("action_mask");
    pl::value_loss_options o;
    o.clip = c.has_param("clip_eps") ? c.param("clip_eps") : std::numeric_limits<double>::infinity();
    o.aggregation = pl::aggregation_options::verl_agent(pl::aggregation::seq_mean_token_mean);
    tensor g = zeros(v.shape);
    const auto r = pl::value_loss(seq, v.view2(), vo.view2(), R.view2(), m.view2(), view2(g.data, v.rows(), v.cols()), o);
    out.set("loss", from_values({r.loss}, {}));
    out.set("grad_values", g);
}

}  // namespace

void register_kl_value(registry& r) {
    r.add("verl/kl_penalty", {verl_kl_penalty, float64_path, "policy_loss::kl_penalty, kl_options::verl(kl_penalty name)"});
    // posttrain implements the straight-through '+' estimators that verl's snapshot routes to
    // kl_penalty_forward unstripped (NotImplementedError); verl strips the suffix from Aug 2026 on.
    for (const char* size : {"small", "extreme_clamp", "long"})
        for (const char* name : {"k1+", "k2+", "k3+", "low_var_kl+", "abs+"})
            r.deviations.push_back({"verl/kl_penalty", std::string(size) + "__" + name, "kl_straight_through",
                                    "verl b178a3c raises NotImplementedError for the '+' (straight-through) estimators "
                                    "because kl_penalty does not strip the suffix; posttrain implements them "
                                    "(kl_options::straight_through: the estimator's value, the gradient of k2), as verl "
                                    "does after the fix"});
    r.add("openrlhf/compute_approx_kl",
          {openrlhf_compute_approx_kl, float32_path, "policy_loss::kl_penalty, kl_options::openrlhf(kl_estimator), float32 output"});
    r.add("verl/AdaptiveKLController",
          {verl_adaptive_kl_controller, float64_path, "policy_loss::adaptive_kl_controller::verl(init, target, horizon).update(kl, n)"});
    r.add("verl/entropy_from_logits", {verl_entropy_from_logits, float64_path, "policy_loss::entropy_from_logits(logits, entropy, grad_logits, 1.0)"});
    r.add("verl/compute_entropy_loss",
          {verl_compute_entropy_loss, float64_path, "policy_loss::entropy_loss, aggregation_options::verl(loss_agg_mode)"});
    r.add("verl/compute_value_loss",
          {verl_compute_value_loss, float64_path, "policy_loss::value_loss, value_loss_options::verl(cliprange_value, loss_agg_mode)"});
    r.add("openrlhf/ValueLoss",
          {openrlhf_value_loss, float64_path, "policy_loss::value_loss, value_loss_options::openrlhf(clip_eps or inf, token_level_loss)"});
    r.add("rto/ValueLoss", {rto_value_loss, float64_path,
                            "policy_loss::value_loss{clip_eps or inf, aggregation_options::verl_agent(seq_mean_token_mean)}"});
}

}  // namespace conformance
