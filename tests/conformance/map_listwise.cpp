// Conformance mappings: beyond pairs (MODPO, D3PO).
//  - modpo/modpo_loss: ZHZisZZ/modpo MODPOTrainer.modpo_loss -> preference::modpo with
//    modpo_options::official(w, beta, loss_type); sums given as sequence_input::sums.
//  - d3po/d3po_loss: yk7333/d3po scripts/train.py's inline sign block, all-ties skip and per-timestep
//    loss -> preference::d3po with d3po_options::official(beta, eps); `skipped` is d3po_result::skipped.

#include <string>
#include <vector>

#include <posttrain/preference/d3po.hpp>
#include <posttrain/preference/modpo.hpp>

#include "conformance.hpp"

namespace conformance {
namespace {

namespace pref = posttrain::preference;
using posttrain::exec::seq;

void modpo_loss(const case_context& c, produced& out) {
    const tensor pc = c.input("policy_chosen_logps"), pr = c.input("policy_rejected_logps");
    const tensor rc = c.input("reference_chosen_logps"), rr = c.input("reference_rejected_logps");
    const tensor mc = c.input("chosen_margin_reward"), mr = c.input("rejected_margin_reward");
    const index_t B = pc.numel();
    std::vector<double> w;
    for (const auto& x : c.params.at("w")) w.push_back(number(x));
    const std::string type = c.params.value("loss_type", std::string("sigmoid"));
    if (type != "sigmoid" && type != "hinge") throw skip_case("loss_type " + type + " is not a MODPO loss");
    const auto options = pref::modpo_options::official(w, c.param("beta"),
                                                       type == "hinge" ? pref::modpo_loss_type::hinge : pref::modpo_loss_type::sigmoid);
    std::vector<double> losses(static_cast<std::size_t>(B)), chosen(static_cast<std::size_t>(B)), rejected(static_cast<std::size_t>(B)), gc(static_cast<std::size_t>(B)), gr(static_cast<std::size_t>(B));
    const auto res = pref::modpo(seq, pref::sequence_input::sums(pc.view1()), pref::sequence_input::sums(pr.view1()),
                                 pref::sequence_input::sums(rc.view1()), pref::sequence_input::sums(rr.view1()), mc.view2(),
                                 mr.view2(), gc, gr, {.losses = losses, .chosen_rewards = chosen, .rejected_rewards = rejected},
                                 options);
    (void)res;
    // The float32 case ran upstream in float32 end to end (inputs, w, every intermediate); posttrain
    // computes in double from the same (exactly representable) float32 inputs: ~1e-6 relative.
    if (pc.dtype == "float32") out.tol = float32_path;
    std::vector<double> acc(static_cast<std::size_t>(B));
    for (std::size_t i = 0; i < acc.size(); ++i) acc[i] = chosen[i] > rejected[i] ? 1.0 : 0.0;
    out.set("losses", from_values(losses, {B}));
    out.set("chosen_rewards", from_values(chosen, {B}));
    out.set("rejected_rewards", from_values(rejected, {B}));
    out.set("grad_policy_chosen_logps", from_values(gc, {B}));
    out.set("grad_policy_rejected_logps", from_values(gr, {B}));
    out.set("metric_accuracy", from_values(acc, {B}, "float32"));
    out.set("derived_w", from_values(w, {index_t(w.size())}));
}

void d3po_loss(const case_context& c, produced& out) {
    const tensor h0 = c.input("human_prefer_0"), h1 = c.input("human_prefer_1");
    const tensor lp0 = c.input("total_prob_0"), lr0 = c.input("total_ref_prob_0");
    const tensor lp1 = c.input("total_prob_1"), lr1 = c.input("total_ref_prob_1");
    const index_t B = lp0.numel();
    std::vector<double> g0(static_cast<std::size_t>(B)), g1(static_cast<std::size_t>(B));
    const auto res = pref::d3po(seq, lp0.view1(), lr0.view1(), lp1.view1(), lr1.view1(), h0.view1(), h1.view1(), g0, g1,
                                pref::d3po_options::official(c.param("beta"), c.param("eps")));
    if (res.skipped) {
        out.set("skipped", from_values({1.0}, {}, "bool"));
        return;
    }
    std::vector<double> signs(std::size_t(2 * B));
    for (index_t i = 0; i < B; ++i) {
        const int s = pref::d3po_sign(h0.data[std::size_t(i)], h1.data[std::size_t(i)]);
        signs[std::size_t(2 * i)] = s;
        signs[std::size_t(2 * i + 1)] = -s;
    }
    out.set("loss", from_values({res.loss}, {}));
    out.set("human_prefer_signs", from_values(signs, {B, 2}, "int32"));
    out.set("grad_total_prob_0", from_values(g0, {B}));
    out.set("grad_total_prob_1", from_values(g1, {B}));
}

}  // namespace

void register_listwise(registry& r) {
    r.add("modpo/modpo_loss", {modpo_loss, float64_path,
                               "preference::modpo(policy/ref sums, margin rewards [B, K-1]) with modpo_options::official(w, beta, loss_type)"});
    r.add("d3po/d3po_loss", {d3po_loss, float64_path,
                             "preference::d3po(lp/lr of both trajectories [B], human_prefer scores) with d3po_options::official(beta, eps); "
                             "skipped = d3po_result::skipped"});
}

}  // namespace conformance
