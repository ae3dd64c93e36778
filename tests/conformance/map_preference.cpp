// Conformance mappings: the pairwise DPO family. TRL v0.28 DPOTrainer.dpo_loss, TRL CPOTrainer.cpo_loss,
// OpenRLHF DPOLoss / PairWiseLoss / LogExpLoss and SimPO's simpo_loss take per-sequence log-probs (or
// rewards): they map to preference::dpo over sequence_input::sums with the framework's preset. The
// gradients in the case files are those of mean(losses) (or of the returned mean loss).

#include <string>

#include "conformance.hpp"

namespace conformance {
namespace {

namespace pref = posttrain::preference;
using posttrain::exec::seq;

pref::pair_loss parse_loss(const std::string& s) {
    using L = pref::pair_loss;
    static const std::map<std::string, L> names = {
        {"sigmoid", L::sigmoid},     {"robust", L::robust},       {"ipo", L::ipo},
        {"hinge", L::hinge},         {"exo_pair", L::exo_pair},   {"nca_pair", L::nca_pair},
        {"bco_pair", L::bco_pair},   {"sppo_hard", L::sppo_hard}, {"aot", L::aot},
        {"aot_unpaired", L::aot_unpaired}, {"apo_zero", L::apo_zero}, {"apo_down", L::apo_down},
        {"discopop", L::discopop},   {"sigmoid_norm", L::sigmoid_norm}, {"sft", L::sft}};
    const auto it = names.find(s);
    if (it == names.end()) throw skip_case("loss_type '" + s + "' is not mapped");
    return it->second;
}

// Runs dpo() on [B] sums and stores the per-pair losses, rewards and gradients under the given names.
struct sums_run {
    std::vector<double> losses, chosen_rewards, rejected_rewards, grad_w, grad_l;
    pref::dpo_result result;
};

sums_run run_sums(const tensor& cw, const tensor& cl, const tensor* rw, const tensor* rl, const pref::dpo_options& o) {
    const index_t B = cw.numel();
    sums_run r;
    r.losses.resize(std::size_t(B));
    r.chosen_rewards.resize(std::size_t(B));
    r.rejected_rewards.resize(std::size_t(B));
    r.grad_w.resize(std::size_t(B));
    r.grad_l.resize(std::size_t(B));
    const auto ref_w = rw ? pref::sequence_input::sums(rw->view1()) : pref::sequence_input{};
    const auto ref_l = rl ? pref::sequence_input::sums(rl->view1()) : pref::sequence_input{};
    r.result = pref::dpo(seq, pref::sequence_input::sums(cw.view1()), pref::sequence_input::sums(cl.view1()), ref_w, ref_l,
                         r.grad_w, r.grad_l, o, {r.losses, r.chosen_rewards, r.rejected_rewards});
    return r;
}

// TRL v0.28 dpo_loss. f_divergence_type given as a string never matches the FDivergenceType enum the
// method compares with, so those cases are reverse KL (README quirk 9); the enum-valued ones use the
// v0.28 alpha / JS forms.
void trl_dpo_loss(const case_context& c, produced& out) {
    const std::string loss_type = c.params.at("loss_type").get<std::string>();
    auto o = pref::dpo_options::trl_v028(parse_loss(loss_type), c.param("beta"), c.param("label_smoothing"));
    o.reference_free = c.params.at("reference_free").get<bool>();
    o.discopop_tau = c.param_or("discopop_tau", 0.05);
    const std::string fdiv = c.params.at("f_divergence_type").get<std::string>();
    if (fdiv == "FDivergenceType.ALPHA_DIVERGENCE") {
        o.divergence = pref::score_transform::alpha_divergence_v028;
        o.alpha_coef = c.param_or("f_alpha_divergence_coef", 1.0);
        if (c.params.contains("f_divergence_params") && c.params.at("f_divergence_params").is_object() &&
            c.params.at("f_divergence_params").contains("alpha_divergence_coef"))
            o.alpha_coef = number(c.params.at("f_divergence_params").at("alpha_divergence_coef"));
    } else if (fdiv == "FDivergenceType.JS_DIVERGENCE") {
        o.divergence = pref::score_transform::js_divergence;
    }
    const tensor cw = c.input("chosen_logps"), cl = c.input("rejected_logps");
    const tensor rw = c.input("ref_chosen_logps"), rl = c.input("ref_rejected_logps");
    const sums_run r = run_sums(cw, cl, &rw, &rl, o);
    const index_t B = cw.numel();
    out.set("losses", from_values(r.losses, {B}));
    out.set("chosen_rewards", from_values(r.chosen_rewards, {B}));
    out.set("rejected_rewards", from_values(r.rejected_rewards, {B}));
    out.set("grad_chosen_logps", from_values(r.grad_w, {B}));
    out.set("grad_rejected_logps", from_values(r.grad_l, {B}));
}

// OpenRLHF DPOLoss(beta, label_smoothing, ipo).
void openrlhf_dpo(const case_context& c, produced& out) {
    const json& init = c.params.at("init");
    const auto o = pref::dpo_options::openrlhf(number(init.at("beta")), number(init.at("label_smoothing")),
                                               init.at("ipo").get<bool>());
    const tensor cw = c.input("policy_chosen_logps"), cl = c.input("policy_rejected_logps");
    const tensor rw = c.input("reference_chosen_logps"), rl = c.input("reference_rejected_logps");
    const sums_run r = run_sums(cw, cl, &rw, &rl, o);
    const index_t B = cw.numel();
    out.set("loss", from_values({r.result.loss}, {}));
    out.set("chosen_rewards", from_values(r.chosen_rewards, {B}));
    out.set("rejected_rewards", from_values(r.rejected_rewards, {B}));
    out.set("grad_policy_chosen_logps", from_values(r.grad_w, {B}));
    out.set("grad_policy_rejected_logps", from_values(r.grad_l, {B}));
}

// OpenRLHF PairWiseLoss and LogExpLoss: the reward model's Bradley-Terry loss on scalar rewards.
void openrlhf_reward_pairwise(const case_context& c, produced& out) {
    const tensor cw = c.input("chosen_reward"), cl = c.input("reject_reward");
    auto o = pref::dpo_options::reward_model();
    const index_t B = cw.numel();
    std::vector<double> gw(static_cast<std::size_t>(B)), gl(static_cast<std::size_t>(B));
    pref::pair_extras extras;
    tensor margin;
    if (c.inputs.contains("margin")) {
        margin = c.input("margin");
        extras.margins = pref::sequence_input::sums(margin.view1());
    }
    const auto r = pref::dpo(seq, pref::sequence_input::sums(cw.view1()), pref::sequence_input::sums(cl.view1()), {}, {},
                             gw, gl, o, {}, extras);
    out.set("loss", from_values({r.loss}, {}));
    out.set("grad_chosen_reward", from_values(gw, {B}));
    out.set("grad_reject_reward", from_values(gl, {B}));
}

// TRL CPOTrainer.cpo_loss: reference-free on the log-probs it is given (the trainer length-averages
// them outside for ipo and simpo); "simpo" is sigmoid with margin simpo_gamma.
void trl_cpo_loss(const case_context& c, produced& out) {
    const std::string t = c.params.at("loss_type").get<std::string>();
    const bool simpo = t == "simpo";
    const auto o = pref::dpo_options::cpo(simpo ? pref::pair_loss::sigmoid : parse_loss(t), c.param("beta"),
                                          c.param("label_smoothing"), simpo ? c.param("simpo_gamma") : 0.0,
                                          c.param_or("alpha", 0.0));
    const tensor cw = c.input("policy_chosen_logps"), cl = c.input("policy_rejected_logps");
    const sums_run r = run_sums(cw, cl, nullptr, nullptr, o);
    const index_t B = cw.numel();
    out.set("losses", from_values(r.losses, {B}));
    out.set("chosen_rewards", from_values(r.chosen_rewards, {B}));
    out.set("rejected_rewards", from_values(r.rejected_rewards, {B}));
    out.set("grad_policy_chosen_logps", from_values(r.grad_w, {B}));
    out.set("grad_policy_rejected_logps", from_values(r.grad_l, {B}));
}

// SimPOTrainer.simpo_loss on length-averaged log-probs (the trainer averages them first, so the
// averages are passed as sums here and average_log_prob is off).
void simpo_loss(const case_context& c, produced& out) {
    const std::string t = c.params.at("loss_type").get<std::string>();
    auto o = pref::dpo_options::simpo(c.param("beta"), c.param("gamma_beta_ratio"), c.param("label_smoothing"),
                                      t == "hinge" ? pref::pair_loss::hinge : parse_loss(t));
    o.average_log_prob = false;
    const tensor cw = c.input("policy_chosen_logps"), cl = c.input("policy_rejected_logps");
    const sums_run r = run_sums(cw, cl, nullptr, nullptr, o);
    const index_t B = cw.numel();
    out.set("losses", from_values(r.losses, {B}));
    out.set("chosen_rewards", from_values(r.chosen_rewards, {B}));
    out.set("rejected_rewards", from_values(r.rejected_rewards, {B}));
    out.set("grad_policy_chosen_logps", from_values(r.grad_w, {B}));
    out.set("grad_policy_rejected_logps", from_values(r.grad_l, {B}));
}

}  // namespace

void register_preference(registry& r) {
    r.add("trl/dpo_loss", {trl_dpo_loss, float64_path,
                           "preference::dpo over sums, dpo_options::trl_v028(loss_type, beta, label_smoothing)"});
    r.add("openrlhf/DPOLoss", {openrlhf_dpo, float64_path, "preference::dpo over sums, dpo_options::openrlhf(beta, label_smoothing, ipo)"});
    r.add("openrlhf/PairWiseLoss", {openrlhf_reward_pairwise, float64_path,
                                    "preference::dpo over reward sums, dpo_options::reward_model() (+ extras.margins)"});
    r.add("openrlhf/LogExpLoss", {openrlhf_reward_pairwise, float64_path,
                                  "preference::dpo over reward sums, dpo_options::reward_model() (log(1 + e^(r_l - r_w)) is the same function)"});
    r.add("trl/cpo_loss", {trl_cpo_loss, float64_path,
                           "preference::dpo over sums, dpo_options::cpo(loss_type, beta, label_smoothing, simpo_gamma, alpha)"});
    r.add("simpo/simpo_loss", {simpo_loss, float64_path,
                               "preference::dpo over length-averaged sums, dpo_options::simpo(beta, gamma_beta_ratio, label_smoothing, loss_type)"});
    r.deviations.push_back({"trl/dpo_loss", "*sft*", "sft_nll_from_model_output",
                            "TRL <= 0.28 'sft' returns model_output['nll_loss'], an NLL computed outside dpo_loss; posttrain's sft "
                            "term computes the NLL from the chosen log-probs (checked by the DPOTrainer._compute_loss sft cases)"});
}

}  // namespace conformance
