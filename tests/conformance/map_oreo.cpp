// Conformance mappings: OREO soft-Bellman losses (jwhj/OREO 6f7403b, openrlhf/trainer/pcl_trainer.py):
// PCLTrainer.loss (critic), dro_loss (+ fit()'s KL block), single_step_loss, traj_loss and the whole actor
// step from logits (accumulated_logps -> dro_loss -> the full-vocabulary or k3 KL).
//
// OREO's tensors are [B, S] over the whole sequence; posttrain's are aligned on the S - 1 log-prob
// positions. state_masks[:, :-1] and action_masks[:, 1:] are passed as strided views, which is all the
// translation there is. The cases' rewards are what the trainer receives, i.e. already through the
// dataset's rew_mul * R + rew_add, so reward_scale / reward_shift stay 1 / 0 here.

#include "conformance.hpp"

#include <posttrain/preference/logits.hpp>
#include <posttrain/preference/oreo.hpp>

namespace conformance {
namespace {

namespace pp = posttrain::preference;
using posttrain::exec::seq;
using posttrain::tensor_view;

// Columns [first, first + T) of an [B, S] case tensor.
tensor_view<const double, 2> columns(const tensor& x, index_t first, index_t T) {
    const index_t ext[2] = {x.rows(), T}, str[2] = {x.cols(), 1};
    return tensor_view<const double, 2>(x.data.data() + first, ext, str);
}

bool param_true(const case_context& c, const char* name) {
    return c.params.contains(name) && c.params.at(name).is_boolean() && c.params.at(name).get<bool>();
}

// The case's trainer switches on top of train_oreo.sh's preset (unclamped k3, clip_ratio over every
// position, as PCLTrainer computes them).
pp::oreo_options options_of(const case_context& c) {
    auto o = pp::oreo_options::official();
    o.beta = c.param("beta");
    o.step_level = param_true(c, "step_level");
    o.kl_coef = c.param_or("kl_reg", 0.0);
    o.unbiased_kl = param_true(c, "unbiased_kl");
    o.forward_kl = param_true(c, "forward_kl");
    o.clip_log = c.param_or("clip_log", std::numeric_limits<double>::infinity());
    o.hinge_coef = c.param_or("hinge_coeff", 0.0);
    o.reduction = param_true(c, "importance_sampling_2") ? pp::oreo_reduction::pooled : pp::oreo_reduction::sequence_mean;
    return o;
}

struct oreo_batch {
    tensor lp, ref, values, state, action, rewards;
    index_t B = 0, T = 0;
};
oreo_batch batch_of(const case_context& c, const char* lp_name, const char* ref_name) {
    oreo_batch b{c.input(lp_name), c.input(ref_name), c.input("values"), c.input("state_masks"),
                 c.inputs.contains("action_masks") ? c.input("action_masks") : tensor{}, c.input("rewards")};
    b.B = b.values.rows();
    b.T = b.values.cols();
    return b;
}

// PCLTrainer.loss(accumulated_logps, reference_accumulated_logps, values, state_masks, rewards, clip_log,
// weights): oreo_value_loss on the given tail sums; grad_accumulated_logps is grad_tails.
void oreo_loss(const case_context& c, produced& out) {
    const auto b = batch_of(c, "accumulated_logps", "reference_accumulated_logps");
    const auto o = options_of(c);
    tensor gv = zeros(b.values.shape), gt = zeros(b.values.shape);
    const bool weighted = c.inputs.contains("weights");
    const tensor w = weighted ? c.input("weights") : tensor{};
    const auto s = columns(b.state, 0, b.T);
    auto run = [&](auto weights) {
        return pp::oreo_value_loss(seq, b.lp.view2(), b.ref.view2(), b.values.view2(), s, b.rewards.view1(), weights,
                                   view2(gv.data, b.B, b.T), view2(gt.data, b.B, b.T), o);
    };
    const auto r = weighted ? run(w.view1()) : run(posttrain::none);
    out.set("loss", from_values({r.loss}, {}));
    out.set("grad_values", gv);
    out.set("grad_accumulated_logps", gt);
    if (c.expected.contains("clip_ratio"))  // torch.mean of a float32 tensor
        out.set("clip_ratio", from_values({double(static_cast<float>(r.clip_ratio))}, {}, "float32"));
}

// PCLTrainer.dro_loss + fit()'s actor KL block (k3, unbiased_kl off): oreo_policy_loss.
void oreo_dro_loss(const case_context& c, produced& out) {
    const auto b = batch_of(c, "logps", "reference_logps");
    const auto o = options_of(c);
    tensor g = zeros(b.lp.shape);
    const bool weighted = c.inputs.contains("weights");
    const tensor w = weighted ? c.input("weights") : tensor{};
    auto run = [&](auto weights) {
        return pp::oreo_policy_loss(seq, b.lp.view2(), b.ref.view2(), columns(b.action, 1, b.T), b.values.view2(),
                                    columns(b.state, 0, b.T), b.rewards.view1(), weights, view2(g.data, b.B, b.T), o);
    };
    const auto r = weighted ? run(w.view1()) : run(posttrain::none);
    out.set("actor_loss", from_values({r.actor_loss}, {}));
    if (c.has_param("kl_reg")) out.set("kl_estimate_actor", from_values({r.kl}, {}));
    out.set("total_loss", from_values({r.loss}, {}));
    out.set("grad_logps", g);
}

// PCLTrainer.single_step_loss: oreo_single_step_loss.
void oreo_single_step(const case_context& c, produced& out) {
    const auto b = batch_of(c, "logps", "reference_logps");
    auto o = options_of(c);
    tensor g = zeros(b.lp.shape), gv = zeros(b.values.shape);
    const auto r = pp::oreo_single_step_loss(seq, b.lp.view2(), b.ref.view2(), columns(b.action, 1, b.T), b.values.view2(),
                                             columns(b.state, 0, b.T), b.rewards.view1(), view2(g.data, b.B, b.T),
                                             view2(gv.data, b.B, b.T), o);
    out.set("loss", from_values({r.actor_loss}, {}));
    out.set("grad_logps", g);
    out.set("grad_values", gv);
}

// PCLTrainer.traj_loss (+ hinge_coeff): oreo_trajectory_loss; vs0 is initial_values.
void oreo_traj(const case_context& c, produced& out) {
    const auto b = batch_of(c, "logps", "reference_logps");
    auto o = options_of(c);
    tensor g = zeros(b.lp.shape), gv = zeros(b.values.shape), v0 = zeros({b.B, 1});
    const auto r = pp::oreo_trajectory_loss(seq, b.lp.view2(), b.ref.view2(), columns(b.action, 1, b.T), b.values.view2(),
                                            columns(b.state, 0, b.T), b.rewards.view1(), view2(g.data, b.B, b.T),
                                            view2(gv.data, b.B, b.T), pp::batch_output(tensor_view<double, 1>(v0.data.data(), b.B)), o);
    out.set("loss", from_values({r.actor_loss}, {}));
    out.set("vs0", v0);
    out.set("grad_logps", g);
    out.set("grad_values", gv);
}

// fit()'s actor step with dro_actor_loss from logits [B, S, V]: token_log_probs of logits[:, :-1] against
// ids[:, 1:] (accumulated_logps), oreo_policy_loss, and the KL: k3 inside oreo_policy_loss, or
// oreo_vocab_kl (unbiased_kl, forward_kl). grad_policy_logits = token_log_probs_backward of the
// log-prob gradient + the vocabulary KL's logits gradient; the last position predicts nothing (0).
void oreo_actor_step(const case_context& c, produced& out) {
    const tensor ids = c.input("ids"), z = c.input("policy_logits"), zr = c.input("reference_logits");
    const tensor values = c.input("values"), state = c.input("state_masks"), action = c.input("action_masks"),
                 rewards = c.input("rewards");
    const index_t B = z.shape.at(0), T = z.shape.at(1) - 1;
    const auto zv = shifted_logits(z, 0, B), zrv = shifted_logits(zr, 0, B);
    const auto labels = shifted_labels(ids, 0, B);
    tensor lp = zeros({B, T}), ref = zeros({B, T}), glp = zeros({B, T}), g = zeros(z.shape), gkl = zeros(z.shape);
    pp::token_log_probs(seq, zv, labels, view2(lp.data, B, T));
    pp::token_log_probs(seq, zrv, labels, view2(ref.data, B, T));
    const auto o = options_of(c);
    const auto a = columns(action, 1, T);
    const auto r = pp::oreo_policy_loss(seq, lp.view2(), ref.view2(), a, values.view2(), columns(state, 0, T), rewards.view1(),
                                        posttrain::none, view2(glp.data, B, T), o);
    const auto gv = shifted_grad(g, 0, B), gklv = shifted_grad(gkl, 0, B);
    pp::token_log_probs_backward(seq, zv, labels, glp.view2(), gv);
    double kl = r.kl, total = r.loss;
    if (o.unbiased_kl) {
        const auto k = pp::oreo_vocab_kl(seq, zv, zrv, a, gklv, o);
        kl = k.kl;
        total = r.actor_loss + k.loss;
        for (std::size_t j = 0; j < g.data.size(); ++j) g.data[j] += gkl.data[j];
    }
    out.set("actor_loss", from_values({r.actor_loss}, {}));
    out.set("kl_estimate_actor", from_values({kl}, {}));
    out.set("total_loss", from_values({total}, {}));
    out.set("grad_policy_logits", g);
    out.set("derived_logps", lp);
    out.set("derived_reference_logps", ref);
}

}  // namespace

void register_oreo(registry& r) {
    r.add("oreo/PCLTrainer.loss", {oreo_loss, float64_path, "preference::oreo_value_loss on the tail sums, oreo_options::official() + case switches"});
    r.add("oreo/PCLTrainer.dro_loss", {oreo_dro_loss, float64_path, "preference::oreo_policy_loss, oreo_options::official() + case switches"});
    r.add("oreo/PCLTrainer.single_step_loss",
          {oreo_single_step, float64_path, "preference::oreo_single_step_loss, oreo_options::official() + case switches"});
    r.add("oreo/PCLTrainer.traj_loss",
          {oreo_traj, float64_path, "preference::oreo_trajectory_loss (hinge_coef), initial_values = vs0"});
    r.add("oreo/PCLTrainer.actor_step",
          {oreo_actor_step, float64_path,
           "preference::token_log_probs -> oreo_policy_loss (+k3) or + oreo_vocab_kl -> token_log_probs_backward"});
}

}  // namespace conformance
