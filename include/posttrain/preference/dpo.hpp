#pragma once
// The DPO family as one fused loss on the host: DPO and its successors (cDPO, robust DPO, IPO, hinge,
// SLiC, EXO, NCA, BCO, SPPO, AOT, APO, DiscoPOP, length-normalised DPO, SFT), SimPO and CPO
// (reference-free, length-averaged, target margin, AlphaPO), TRL's f-divergence scores, its weighted
// multi-loss combination, LD-DPO and WPO weights, and OpenRLHF's DPO / reward-model pairwise losses.
//
// One call reads the chosen and rejected responses under the policy (and the reference), each as
// per-token log-probs with a mask or as per-sequence sums, and returns the reduced loss with TRL's
// implicit-reward metrics; dL/d(policy log-probs) (times grad_scale) goes into the caller's views.
// Reference log-probs get no gradient. Options and presets: dpo_options.hpp; one pair's maths, shared
// with the CUDA path: dpo_pair.hpp. The maths and its sources: docs/algorithms/dpo.md and
// ../shared/specs/preference_losses.md §2, §3.21.

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include "common.hpp"
#include "dpo_options.hpp"
#include "dpo_pair.hpp"
#include "sequence.hpp"

namespace posttrain::preference {

namespace detail {

// The per-pair mean of the batch-coupled AOT losses: the cDPO form on delta_k = x_(k) - y_(k) of two
// ascending-sorted vectors; the gradient of position k goes to the item that sorts to k. Ties sort by
// index (a stable order), so the assignment is deterministic.
inline void aot_terms(const std::vector<double>& x, const std::vector<double>& y, double beta, double eps,
                      std::vector<double>& loss, std::vector<double>& dx, std::vector<double>& dy) {
    const std::size_t n = x.size();
    std::vector<std::size_t> px(n), py(n);
    std::iota(px.begin(), px.end(), std::size_t{0});
    std::iota(py.begin(), py.end(), std::size_t{0});
    std::stable_sort(px.begin(), px.end(), [&](std::size_t a, std::size_t b) { return x[a] < x[b]; });
    std::stable_sort(py.begin(), py.end(), [&](std::size_t a, std::size_t b) { return y[a] < y[b]; });
    loss.assign(n, 0.0);
    dx.assign(n, 0.0);
    dy.assign(n, 0.0);
    for (std::size_t k = 0; k < n; ++k) {
        double dz;
        loss[k] = smoothed_logistic(beta * (x[px[k]] - y[py[k]]), eps, dz);
        dx[px[k]] = beta * dz;
        dy[py[k]] = -beta * dz;
    }
}

// The values of an optional per-pair input (extras.weights, extras.margins); empty when absent.
inline std::vector<double> sums_of(const sequence_input& in, index_t batch, where w) {
    if (!in.present()) return {};
    require(!in.per_token(), w, "must be given as a [B] vector (sequence_input::sums)");
    require(in.batch() == batch, w, "must have one entry per pair: " + str(in.batch()) + ", expected " + str(batch));
    std::vector<double> v(static_cast<std::size_t>(batch));
    std::visit(
        [&](auto s) {
            if constexpr (!std::is_same_v<decltype(s), std::monostate>) {
                for (index_t i = 0; i < batch; ++i) {
                    v[std::size_t(i)] = double(s(i));
                    require(numeric::is_finite(v[std::size_t(i)]), w, "entry " + str(i) + " is not finite");
                }
            }
        },
        in.sums_view());
    return v;
}

}  // namespace detail

// The fused DPO-family loss over B pairs. chosen / rejected: the policy's log-probs of the preferred
// and dispreferred responses; ref_chosen / ref_rejected: the reference's (absent when
// options.reference_free). Each is a sequence_input (per-token with a mask, or per-sequence sums);
// grad_chosen / grad_rejected receive d loss / d (policy log-probs) * grad_scale in the matching form.
template <class Policy>
dpo_result dpo(const Policy& policy, const sequence_input& chosen, const sequence_input& rejected,
               const sequence_input& ref_chosen, const sequence_input& ref_rejected, const sequence_grad& grad_chosen,
               const sequence_grad& grad_rejected, const dpo_options& o = {}, const pair_outputs& outputs = {},
               const pair_extras& extras = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::dpo: host policy expected");
    constexpr const char* fn = "posttrain::preference::dpo";
    using posttrain::detail::require;
    detail::check_dpo_options(o, fn);
    const index_t B = chosen.batch();
    require(chosen.present(), {fn, "chosen"}, "is required");
    require(B > 0, {fn, "chosen"}, "must hold at least one pair");
    const std::size_t nb = std::size_t(B);
    const auto terms = detail::terms_of(o);
    // The per-pair terms go through dpo_pair.hpp; the batch-sorted AOT terms are taken here.
    std::vector<loss_term> per_pair, sorted;
    std::vector<std::size_t> per_pair_at, sorted_at;  // positions in `terms`
    for (std::size_t k = 0; k < terms.size(); ++k) {
        const bool aot = terms[k].loss == pair_loss::aot || terms[k].loss == pair_loss::aot_unpaired;
        (aot ? sorted : per_pair).push_back(terms[k]);
        (aot ? sorted_at : per_pair_at).push_back(k);
    }
    require(per_pair.size() <= std::size_t(max_pair_terms), {fn, "options.losses"},
            "at most " + detail::str(max_pair_terms) + " loss terms besides aot / aot_unpaired");

    // Sequence sums (LD-DPO weighs the tokens past the pair's shared length by ld_alpha; the shared
    // length comes from the policy masks and applies to the reference too).
    std::vector<double> shared;
    token_weighting weighting;
    if (o.ld_alpha != 1.0) {
        require(chosen.per_token() && rejected.per_token(), {fn, "options"},
                "ld_alpha needs the policy log-probs per token (sequence_input::tokens)");
        const auto nw = detail::reduce(policy, chosen, B, {fn, "chosen"}).length;
        const auto nl = detail::reduce(policy, rejected, B, {fn, "rejected"}).length;
        shared.resize(nb);
        for (std::size_t k = 0; k < nb; ++k) shared[k] = std::min(nw[k], nl[k]);
        weighting = {shared.data(), o.ld_alpha};
    }
    auto weighting_of = [&](const sequence_input& in) { return in.per_token() ? weighting : token_weighting{}; };
    auto reduce_side = [&](const sequence_input& in, const char* name) {
        return detail::reduce(policy, in, B, {fn, name}, weighting_of(in));
    };
    const bool has_ref = ref_chosen.present() || ref_rejected.present();
    require(o.reference_free || has_ref, {fn, "ref_chosen"}, "is required unless options.reference_free");
    sequence_values pw, pl, rw, rl;
    if (has_ref) {  // a policy side and its reference under one mask are read in one pass
        std::tie(pw, rw) = detail::reduce_with_reference(policy, chosen, ref_chosen, B, {fn, "chosen"}, {fn, "ref_chosen"}, weighting);
        std::tie(pl, rl) =
            detail::reduce_with_reference(policy, rejected, ref_rejected, B, {fn, "rejected"}, {fn, "ref_rejected"}, weighting);
    } else {
        pw = reduce_side(chosen, "chosen");
        pl = reduce_side(rejected, "rejected");
    }

    // Lengths are needed by length averaging, length-normalised IPO, sigmoid_norm and the token-mean sft.
    bool need_len = o.average_log_prob;
    for (const loss_term& t : terms)
        need_len = need_len || t.loss == pair_loss::sigmoid_norm || (t.loss == pair_loss::sft && o.sft_token_mean) ||
                   (t.loss == pair_loss::ipo && o.ipo_length_normalized);
    if (need_len) {
        require(chosen.has_lengths(), {fn, "chosen"}, "needs lengths for this loss (sequence_input::sums(sums, lengths))");
        require(rejected.has_lengths(), {fn, "rejected"}, "needs lengths for this loss (sequence_input::sums(sums, lengths))");
    }

    const auto weights = detail::sums_of(extras.weights, B, {fn, "extras.weights"});
    const auto margins = detail::sums_of(extras.margins, B, {fn, "extras.margins"});
    for (const loss_term& t : terms) {
        const std::string name = detail::pair_loss_name(t.loss);
        require(margins.empty() || detail::takes_margin(t.loss), {fn, "extras.margins"},
                "margins apply to sigmoid, sigmoid_norm, hinge, robust and exo_pair, not to '" + name + "'");
        // TRL refuses WPO weights with AOT too: a sorted position's loss has no pair of its own to weigh.
        require(weights.empty() || (t.loss != pair_loss::aot && t.loss != pair_loss::aot_unpaired), {fn, "extras.weights"},
                "per-pair weights do not apply to the batch-sorted '" + name + "'");
    }
    for (double x : weights) require(x >= 0, {fn, "extras.weights"}, "weights must be finite and >= 0");

    detail::pair_config cfg = detail::make_pair_config(o, per_pair, B, has_ref);
    cfg.has_weights = !weights.empty();
    cfg.has_margins = !margins.empty();
    std::vector<detail::pair_sums> sums(nb);
    std::vector<detail::pair_ratios> ratios(nb);
    for (std::size_t k = 0; k < nb; ++k) {
        sums[k] = {pw.sum[k], pl.sum[k], has_ref ? rw.sum[k] : 0.0, has_ref ? rl.sum[k] : 0.0, pw.length[k], pl.length[k]};
        ratios[k] = detail::ratios_of(cfg, sums[k]);
        require(!ratios[k].bad, {fn, "options.divergence"},
                "the score of pair " + detail::str(index_t(k)) + " overflows (exp of a log-ratio beyond the double range)");
    }
    // The batch constants: sft's token count and NLL, BCO's mean reward, the weights' mean.
    detail::batch_stats st;
    st.sum_nw = need_len ? detail::fixed_order_sum(pw.length.data(), B) : 0.0;
    st.sum_pw = detail::fixed_order_sum(pw.sum.data(), B);
    st.reward = detail::fixed_order_sum(B, [&](index_t i) {
        const auto& r = ratios[std::size_t(i)];
        return o.beta * r.lw + o.beta * r.ll;
    });
    st.sum_w = weights.empty() ? 0.0 : detail::fixed_order_sum(weights.data(), B);

    dpo_result result;
    result.pairs = B;
    std::vector<double> total(nb), cw(nb), cl(nb), rew_w(nb), rew_l(nb), logps_w(nb), logps_l(nb);
    std::vector<std::vector<double>> term_loss(terms.size(), std::vector<double>(nb));
    for (std::size_t k = 0; k < nb; ++k) {
        const detail::pair_eval e = detail::evaluate_pair(cfg, sums[k], weights.empty() ? 1.0 : weights[k],
                                                          margins.empty() ? 0.0 : margins[k], st);
        total[k] = e.total;
        cw[k] = e.cw;
        cl[k] = e.cl;
        rew_w[k] = e.rew_w;
        rew_l[k] = e.rew_l;
        logps_w[k] = e.logps_w;
        logps_l[k] = e.logps_l;
        for (std::size_t t = 0; t < per_pair.size(); ++t) term_loss[per_pair_at[t]][k] = e.terms[t];
    }
    // AOT: the cDPO form on sorted policy margins minus sorted reference margins (aot, raw log-probs)
    // or sorted chosen minus sorted rejected log-ratios (aot_unpaired); chained like the pair terms.
    for (std::size_t t = 0; t < sorted.size(); ++t) {
        const bool paired = sorted[t].loss == pair_loss::aot;
        std::vector<double> x(nb), y(nb), loss, dx, dy;
        for (std::size_t k = 0; k < nb; ++k) {
            const auto& r = ratios[k];
            x[k] = paired ? r.pw - r.pl : r.lw;
            y[k] = paired ? (has_ref && !o.reference_free ? r.rw - r.rl : 0.0) : r.ll;
        }
        detail::aot_terms(x, y, o.beta, o.label_smoothing, loss, dx, dy);
        const double scale = sorted[t].weight * cfg.factor * o.grad_scale;
        for (std::size_t k = 0; k < nb; ++k) {
            term_loss[sorted_at[t]][k] = loss[k];
            total[k] += sorted[t].weight * loss[k];
            cw[k] += scale * dx[k] * ratios[k].aw;  // x = S_w - S_l reaches S_w with +, S_l with -
            cl[k] += scale * (paired ? -dx[k] : dy[k]) * ratios[k].al;
        }
    }
    for (const auto& tl : term_loss) result.term_losses.push_back(detail::fixed_order_sum(tl.data(), B) / double(B));
    result.loss = detail::fixed_order_sum(total.data(), B) * cfg.factor;
    result.metrics = detail::pair_reward_metrics(rew_w, rew_l, logps_w, logps_l);
    result.bco_batch_reward_mean = st.reward / double(2 * B);

    detail::check_grads_against(fn, {{grad_chosen, "grad_chosen", chosen}, {grad_rejected, "grad_rejected", rejected}},
                                {{chosen, "chosen"}, {rejected, "rejected"}, {ref_chosen, "ref_chosen"},
                                 {ref_rejected, "ref_rejected"}, {extras.weights, "extras.weights"},
                                 {extras.margins, "extras.margins"}});
    detail::check_outputs_before_writes(fn, B,
                                        {{outputs.losses, "outputs.losses"},
                                         {outputs.chosen_rewards, "outputs.chosen_rewards"},
                                         {outputs.rejected_rewards, "outputs.rejected_rewards"},
                                         {outputs.chosen_logps, "outputs.chosen_logps"},
                                         {outputs.rejected_logps, "outputs.rejected_logps"}},
                                        {{grad_chosen, "grad_chosen"}, {grad_rejected, "grad_rejected"}});
    detail::broadcast(policy, chosen, cw, grad_chosen, {fn, "grad_chosen"}, weighting_of(chosen));
    detail::broadcast(policy, rejected, cl, grad_rejected, {fn, "grad_rejected"}, weighting_of(rejected));
    outputs.losses.write(total, {fn, "outputs.losses"});
    outputs.chosen_rewards.write(rew_w, {fn, "outputs.chosen_rewards"});
    outputs.rejected_rewards.write(rew_l, {fn, "outputs.rejected_rewards"});
    outputs.chosen_logps.write(logps_w, {fn, "outputs.chosen_logps"});
    outputs.rejected_logps.write(logps_l, {fn, "outputs.rejected_logps"});
    return result;
}

// SimPO from per-token log-probs: dpo() with dpo_options::simpo(...) and no reference.
template <class Policy>
dpo_result simpo(const Policy& policy, const sequence_input& chosen, const sequence_input& rejected,
                 const sequence_grad& grad_chosen, const sequence_grad& grad_rejected,
                 const dpo_options& o = dpo_options::simpo(), const pair_outputs& outputs = {}) {
    return dpo(policy, chosen, rejected, sequence_input{}, sequence_input{}, grad_chosen, grad_rejected, o, outputs);
}

}  // namespace posttrain::preference
