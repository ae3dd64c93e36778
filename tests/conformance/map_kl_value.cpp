// KL estimators and controllers, the entropy bonus and the clipped value loss: verl kl_penalty,
// AdaptiveKLController, entropy_from_logits, compute_entropy_loss, compute_value_loss (core_algos.py /
// torch_functional.py, b178a3c); OpenRLHF compute_approx_kl and ValueLoss (3c3be62); RTO's ValueLoss
// (the older OpenRLHF loss, f2c1294).

#include "conformance.hpp"

#include <posttrain/policy_loss/kl.hpp>

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
}

}  // namespace conformance
