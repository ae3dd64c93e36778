// Conformance mappings: KTO, ORPO.
//
// trl/kto_loss (TRL v0.28.0 KTOTrainer.kto_loss, then the trainer's losses.nanmean()): the summed
// log-probs of the desirable ("chosen"), undesirable ("rejected") and mismatched ("KL") items go in as
// sequence_input::sums; kto_options::trl(beta, loss_type, calculate_KL, desirable_weight,
// undesirable_weight). TRL's losses are our per-item losses, its gradients ours (mean over all items).
//
// trl/odds_ratio_loss (TRL f2cd577 ORPOTrainer.odds_ratio_loss): the log-probs TRL receives are already
// averaged (or, in the "summed" cases, sums used as they are), so they go in as sums with
// length_normalize = false; odds_ratio_options::trl(beta) casts to float32 as TRL does. TRL's `losses`
// are beta log sigma(z), the negative of posttrain's per-pair odds-ratio loss, and its gradients are
// those of mean(losses): both are negated here.

#include <limits>
#include <string>
#include <vector>

#include <posttrain/preference/kto.hpp>
#include <posttrain/preference/orpo.hpp>

#include "conformance.hpp"

namespace conformance {
namespace {

namespace pref = posttrain::preference;
using posttrain::exec::seq;

pref::kto_loss_type parse_kto_loss_type(const std::string& s) {
    if (s == "kto") return pref::kto_loss_type::kto;
    if (s == "apo_zero_unpaired") return pref::kto_loss_type::apo_zero_unpaired;
    throw skip_case("loss_type '" + s + "' is not mapped");
}

void trl_kto_loss(const case_context& c, produced& out) {
    const tensor pc = c.input("policy_chosen_logps"), pr = c.input("policy_rejected_logps"), pk = c.input("policy_KL_logps");
    const tensor rc = c.input("reference_chosen_logps"), rr = c.input("reference_rejected_logps"),
                 rk = c.input("reference_KL_logps");
    const auto options = pref::kto_options::trl(c.param("beta"), parse_kto_loss_type(c.params.at("loss_type").get<std::string>()),
                                                c.params.at("calculate_KL").get<bool>(), c.param("desirable_weight"),
                                                c.param("undesirable_weight"));
    const index_t nd = pc.numel(), nu = pr.numel();
    std::vector<double> losses(static_cast<std::size_t>(nd + nu)), chosen(static_cast<std::size_t>(nd)),
        rejected(static_cast<std::size_t>(nu)), gc(static_cast<std::size_t>(nd)), gr(static_cast<std::size_t>(nu));
    const auto r = pref::kto(seq, {pref::sequence_input::sums(pc.view1()), pref::sequence_input::sums(rc.view1())},
                             {pref::sequence_input::sums(pr.view1()), pref::sequence_input::sums(rr.view1())},
                             {pref::sequence_input::sums(pk.view1()), pref::sequence_input::sums(rk.view1())}, gc, gr,
                             {losses, chosen, rejected}, options);
    out.set("losses", from_values(losses, {nd + nu}));
    out.set("chosen_rewards", from_values(chosen, {nd}));
    out.set("rejected_rewards", from_values(rejected, {nu}));
    out.set("kl", from_values({r.kl}, {}));
    out.set("loss", from_values({r.loss}, {}));
    out.set("grad_policy_chosen_logps", from_values(gc, {nd}));
    out.set("grad_policy_rejected_logps", from_values(gr, {nu}));
}

void trl_odds_ratio_loss(const case_context& c, produced& out) {
    const tensor pc = c.input("policy_chosen_logps"), pr = c.input("policy_rejected_logps");
    const index_t n = pc.numel();
    auto options = pref::odds_ratio_options::trl(c.param("beta"));
    options.length_normalize = false;  // TRL receives the averaged log-probs
    std::vector<double> losses(static_cast<std::size_t>(n)), chosen(static_cast<std::size_t>(n)),
        rejected(static_cast<std::size_t>(n)), gc(static_cast<std::size_t>(n)), gr(static_cast<std::size_t>(n));
    const auto r = pref::odds_ratio(seq, pref::sequence_input::sums(pc.view1()), pref::sequence_input::sums(pr.view1()), gc, gr,
                                    {losses, chosen, rejected}, options);
    for (auto* v : {&losses, &gc, &gr})
        for (auto& x : *v) x = -x;  // TRL's losses are log-likelihoods: beta log sigma(z)
    out.set("losses", from_values(losses, {n}, "float32"));
    out.set("chosen_rewards", from_values(chosen, {n}, "float32"));
    out.set("rejected_rewards", from_values(rejected, {n}, "float32"));
    out.set("mean_log_sigmoid_log_odds", from_values({r.mean_log_sigmoid}, {}, "float32"));
    out.set("mean_log_odds", from_values({r.mean_log_odds}, {}, "float32"));
    out.set("grad_policy_chosen_logps", from_values(gc, {n}));
    out.set("grad_policy_rejected_logps", from_values(gr, {n}));
}

}  // namespace

void register_kto_orpo(registry& r) {
    r.add("trl/kto_loss", {trl_kto_loss, float64_path,
                           "preference::kto over sums, kto_options::trl(beta, loss_type, calculate_KL, desirable_weight, "
                           "undesirable_weight); per-item losses, rewards, kl, nanmean loss and its gradients"});
    r.add("trl/odds_ratio_loss",
          {trl_odds_ratio_loss, float32_path,
           "preference::odds_ratio over the averaged log-probs as sums, odds_ratio_options::trl(beta) with "
           "length_normalize=false (float32 cast); TRL's losses and gradients are the negatives of posttrain's"});
    for (const char* id : {"near_zero_and_very_negative__beta0.1", "near_zero_and_very_negative__beta1.0"})
        r.deviations.push_back(
            {"trl/odds_ratio_loss", id, "orpo_finite_gradient_near_zero",
             "a chosen log-prob of -1e-12 rounds to exp() = 1 in float32: TRL's log1mexp takes log(0) in the unselected "
             "torch.where branch and autograd returns NaN for that gradient; posttrain clamps at log_prob_ceiling "
             "(-1e-6) and returns the finite gradient (0: the pair's loss is flat there). The other pairs of these "
             "cases are checked against TRL's values in tests/preference/orpo_test.cpp."});
}

}  // namespace conformance
