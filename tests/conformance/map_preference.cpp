// Conformance mappings: the pairwise DPO family. TRL v0.28 DPOTrainer.dpo_loss, TRL CPOTrainer.cpo_loss,
// OpenRLHF DPOLoss / PairWiseLoss / LogExpLoss and SimPO's simpo_loss take per-sequence log-probs (or
// rewards): they map to preference::dpo over sequence_input::sums with the framework's preset. The
// gradients in the case files are those of mean(losses) (or of the returned mean loss).

#include <limits>
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

// Stores a sums_run under the case file's names: per-pair losses (when the reference returns them),
// rewards, and the gradients named grad_<prefix>chosen_logps / grad_<prefix>rejected_logps.
void store(produced& out, const sums_run& r, index_t B, const std::string& grad_prefix, bool losses = true) {
    if (losses) out.set("losses", from_values(r.losses, {B}));
    out.set("chosen_rewards", from_values(r.chosen_rewards, {B}));
    out.set("rejected_rewards", from_values(r.rejected_rewards, {B}));
    out.set("grad_" + grad_prefix + "chosen_logps", from_values(r.grad_w, {B}));
    out.set("grad_" + grad_prefix + "rejected_logps", from_values(r.grad_l, {B}));
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
    store(out, r, B, "");
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
    store(out, r, B, "policy_", /*losses=*/false);
}

// OpenRLHF PairWiseLoss and LogExpLoss: the reward model's Bradley-Terry loss on scalar rewards.
// PairWiseLoss subtracts an optional margin; LogExpLoss accepts one and ignores it.
void openrlhf_reward_pairwise(const case_context& c, produced& out, bool use_margin) {
    const tensor cw = c.input("chosen_reward"), cl = c.input("reject_reward");
    auto o = pref::dpo_options::reward_model();
    const index_t B = cw.numel();
    std::vector<double> gw(static_cast<std::size_t>(B)), gl(static_cast<std::size_t>(B));
    pref::pair_extras extras;
    tensor margin;
    if (use_margin && c.inputs.contains("margin")) {
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
    const auto o = t == "simpo" ? pref::dpo_options::cpo_simpo(c.param("beta"), c.param("simpo_gamma"),
                                                               c.param("label_smoothing"), c.param_or("alpha", 0.0))
                                : pref::dpo_options::cpo(parse_loss(t), c.param("beta"), c.param("label_smoothing"),
                                                         c.param_or("alpha", 0.0));
    const tensor cw = c.input("policy_chosen_logps"), cl = c.input("policy_rejected_logps");
    const sums_run r = run_sums(cw, cl, nullptr, nullptr, o);
    const index_t B = cw.numel();
    store(out, r, B, "policy_");
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
    store(out, r, B, "policy_");
}

// ---- logits-level pipelines ----

// Causal-LM scoring as the trainers do it: log_softmax(logits[:, :-1]) at labels[:, 1:] (the shifted
// views of conformance.hpp). `ignore` is the label that is not scored (SimPO: -100; TRL DPO scores
// every position and masks afterwards, so it passes a value no label takes).
std::vector<double> score_tokens(const tensor& logits, const tensor& ids, std::int64_t ignore) {
    const index_t rows = logits.shape[0], cols = logits.shape[1] - 1;
    std::vector<double> logp(static_cast<std::size_t>(rows * cols));
    pref::token_log_probs(seq, shifted_logits(logits, 0, rows), shifted_labels(ids, 0, rows), view2(logp, rows, cols), {ignore});
    return logp;
}

// d loss / d logits from d loss / d logp of the shifted positions (the last position gets 0).
tensor logits_gradient(const tensor& logits, const tensor& ids, const std::vector<double>& grad_logp, std::int64_t ignore) {
    tensor g = zeros(logits.shape);
    const index_t rows = logits.shape[0], cols = logits.shape[1] - 1;
    pref::token_log_probs_backward(seq, shifted_logits(logits, 0, rows), shifted_labels(ids, 0, rows),
                                   posttrain::tensor_view<const double, 2>(grad_logp.data(), rows, cols), shifted_grad(g, 0, rows),
                                   {ignore});
    return g;
}

// Rows [first, first + n) of a row-major [rows, cols] buffer as a view.
template <class T>
posttrain::tensor_view<T, 2> rows_of(T* data, index_t first, index_t n, index_t cols) {
    return posttrain::tensor_view<T, 2>(data + first * cols, n, cols);
}

// TRL DPOTrainer._compute_loss (current): the batch is [chosen; rejected], log-probs of the completion
// tokens are summed (LD-weighted with ld_alpha), the reference sums are precomputed; loss =
// sum_k weight_k mean(per-pair loss_k), WPO weights from the detached logits.
void trl_compute_loss(const case_context& c, produced& out) {
    const tensor logits = c.input("logits"), ids = c.input("input_ids"), cmask = c.input("completion_mask");
    const tensor ref_w = c.input("ref_chosen_logps"), ref_l = c.input("ref_rejected_logps");
    constexpr std::int64_t no_ignore = std::numeric_limits<std::int64_t>::min();
    const std::vector<double> logp = score_tokens(logits, ids, no_ignore);
    const index_t rows = logits.shape[0], B = rows / 2, T = logits.shape[1] - 1;
    const auto m = shifted_labels(cmask, 0, rows);  // completion_mask[:, 1:], a strided [rows, T] view

    const auto types = c.params.at("loss_type").get<std::vector<std::string>>();
    const auto weights = c.params.at("loss_weights").get<std::vector<double>>();
    std::vector<pref::loss_term> terms;
    for (std::size_t k = 0; k < types.size(); ++k) terms.push_back({parse_loss(types[k]), weights.at(k)});
    auto o = pref::dpo_options::trl(terms, c.param("beta"), c.param("label_smoothing"));
    o.discopop_tau = c.param_or("discopop_tau", 0.05);
    if (c.has_param("ld_alpha")) o.ld_alpha = c.param("ld_alpha");
    const std::string fdiv = c.params.at("f_divergence_type").get<std::string>();
    using F = pref::score_transform;
    o.divergence = fdiv == "forward_kl" ? F::forward_kl
                   : fdiv == "js_divergence" ? F::js_divergence
                   : fdiv == "alpha_divergence" ? F::alpha_divergence
                                                : F::reverse_kl;
    o.alpha_coef = c.param_or("f_alpha_divergence_coef", 1.0);

    const double* lp = logp.data();
    const auto mask_rows = [&](index_t first) {
        const index_t e[2] = {B, T}, st[2] = {m.stride(0), m.stride(1)};
        return posttrain::tensor_view<const std::int64_t, 2>(m.data() + first * m.stride(0), e, st);
    };
    const auto chosen = pref::sequence_input::tokens(rows_of(lp, 0, B, T), mask_rows(0));
    const auto rejected = pref::sequence_input::tokens(rows_of(lp, B, B, T), mask_rows(B));
    std::vector<double> grad(static_cast<std::size_t>(rows * T), 0.0), pair_weights;
    pref::pair_extras extras;
    if (c.params.at("use_weighting").get<bool>()) {
        std::vector<double> sq(static_cast<std::size_t>(rows * T)), w(static_cast<std::size_t>(rows));
        posttrain::advantage::sum_pi_squared_from_logits(seq, shifted_logits(logits, 0, rows), view2(sq, rows, T));
        pref::wpo_weights(seq, posttrain::tensor_view<const double, 2>(lp, rows, T),
                          posttrain::tensor_view<const double, 2>(sq.data(), rows, T), m, w);
        for (index_t i = 0; i < B; ++i) pair_weights.push_back(w[std::size_t(i)] * w[std::size_t(B + i)]);
        extras.weights = pref::sequence_input::sums(pair_weights);
    }
    const auto r = pref::dpo(seq, chosen, rejected, pref::sequence_input::sums(ref_w.view1()),
                             pref::sequence_input::sums(ref_l.view1()), rows_of(grad.data(), 0, B, T),
                             rows_of(grad.data(), B, B, T), o, {}, extras);
    // derived_*: the plain completion sums (before LD weighting), from the same reduction.
    std::vector<double> sums(static_cast<std::size_t>(2 * B));
    pref::sequence_log_probs(seq, posttrain::tensor_view<const double, 2>(lp, rows, T), m, sums);
    const std::vector<double> logps_w(sums.begin(), sums.begin() + B), logps_l(sums.begin() + B, sums.end());
    out.set("loss", from_values({r.loss}, {}));
    out.set("grad_logits", logits_gradient(logits, ids, grad, no_ignore));
    out.set("derived_chosen_logps", from_values(logps_w, {B}));
    out.set("derived_rejected_logps", from_values(logps_l, {B}));
    out.set("metric_rewards_chosen", from_values({r.metrics.chosen}, {}));
    out.set("metric_rewards_rejected", from_values({r.metrics.rejected}, {}));
    out.set("metric_rewards_margins", from_values({r.metrics.margin}, {}));
    // TRL averages the 0/1 accuracies as a float32 tensor.
    out.set("metric_rewards_accuracies", from_values({double(float(r.metrics.accuracy))}, {}));
    if (logits.dtype == "float32") out.tol = float32_path;
}

// SimPOTrainer.get_batch_loss_metrics: [chosen; rejected] logits, labels with -100, length-averaged
// log-probs, SimPO loss (+ sft_weight * the chosen tokens' cross-entropy).
void simpo_batch_loss_metrics(const case_context& c, produced& out) {
    const tensor logits = c.input("logits");
    const tensor cl = c.input("chosen_labels"), rl = c.input("rejected_labels");
    const index_t B = cl.rows(), L = cl.cols(), V = logits.shape[2];
    tensor labels = zeros({2 * B, L}, "int64");
    labels.ints.resize(std::size_t(2 * B * L));
    for (index_t i = 0; i < B * L; ++i) {
        labels.ints[std::size_t(i)] = cl.ints[std::size_t(i)];
        labels.ints[std::size_t(B * L + i)] = rl.ints[std::size_t(i)];
    }
    const std::int64_t ignore = std::int64_t(c.param_or("label_pad_token_id", -100));
    const std::vector<double> logp = score_tokens(logits, labels, ignore);
    const index_t T = L - 1;
    const auto shifted = shifted_labels(labels, 0, 2 * B);
    std::vector<std::uint8_t> mask(static_cast<std::size_t>(2 * B * T));
    for (index_t i = 0; i < 2 * B; ++i)
        for (index_t t = 0; t < T; ++t) mask[std::size_t(i * T + t)] = shifted(i, t) != ignore;

    const std::string t = c.params.at("loss_type").get<std::string>();
    auto o = pref::dpo_options::simpo(c.param("beta"), c.param("gamma_beta_ratio"), c.param("label_smoothing"), parse_loss(t));
    const double sft_weight = c.param_or("sft_weight", 0.0);
    if (sft_weight > 0) o.losses = {{o.loss, 1.0}, {pref::pair_loss::sft, sft_weight}};

    const double* lp = logp.data();
    const std::uint8_t* m = mask.data();
    std::vector<double> grad(std::size_t(2 * B * T), 0.0), logps_w(static_cast<std::size_t>(B)), logps_l(static_cast<std::size_t>(B));
    pref::pair_outputs outputs;
    outputs.chosen_logps = logps_w;
    outputs.rejected_logps = logps_l;
    const auto r = pref::simpo(seq, pref::sequence_input::tokens(rows_of(lp, 0, B, T), rows_of(m, 0, B, T)),
                               pref::sequence_input::tokens(rows_of(lp, B, B, T), rows_of(m, B, B, T)),
                               rows_of(grad.data(), 0, B, T), rows_of(grad.data(), B, B, T), o, outputs);
    out.set("loss", from_values({r.loss}, {}));
    out.set("grad_logits", logits_gradient(logits, labels, grad, ignore));
    out.set("derived_policy_chosen_logps", from_values(logps_w, {B}));
    out.set("derived_policy_rejected_logps", from_values(logps_l, {B}));
    out.set("metric_rewards_chosen", from_values({r.metrics.chosen}, {}));
    out.set("metric_rewards_rejected", from_values({r.metrics.rejected}, {}));
    out.set("metric_rewards_accuracies", from_values({double(float(r.metrics.accuracy))}, {}));  // a float32 mean in SimPO
    out.set("metric_rewards_margins", from_values({r.metrics.margin}, {}));
    out.set("metric_logps_chosen", from_values({r.metrics.logps_chosen}, {}));
    out.set("metric_logps_rejected", from_values({r.metrics.logps_rejected}, {}));
    if (sft_weight > 0) out.set("metric_sft_loss", from_values({r.term_losses.at(1)}, {}));
    // logits/chosen and logits/rejected are plain means of the logits tensor, a trainer statistic outside
    // any loss; with an SFT term SimPO has already cut the last position off the chosen logits.
    const index_t half = B * L * V, cut = sft_weight > 0 ? 1 : 0;
    double sum_w = 0, sum_l = 0;
    for (index_t i = 0; i < B; ++i)
        for (index_t t = 0; t < L; ++t)
            for (index_t v = 0; v < V; ++v) {
                const std::size_t k = std::size_t((i * L + t) * V + v);
                if (t < L - cut) sum_w += logits.data[k];
                sum_l += logits.data[std::size_t(half) + k];
            }
    out.set("metric_logits_chosen", from_values({sum_w / double(B * (L - cut) * V)}, {}));
    out.set("metric_logits_rejected", from_values({sum_l / double(half)}, {}));
}

}  // namespace

void register_preference(registry& r) {
    r.add("trl/dpo_loss", {trl_dpo_loss, float64_path,
                           "preference::dpo over sums, dpo_options::trl_v028(loss_type, beta, label_smoothing)"});
    r.add("openrlhf/DPOLoss", {openrlhf_dpo, float64_path, "preference::dpo over sums, dpo_options::openrlhf(beta, label_smoothing, ipo)"});
    r.add("openrlhf/PairWiseLoss", {[](const case_context& c, produced& out) { openrlhf_reward_pairwise(c, out, true); },
                                    float64_path,
                                    "preference::dpo over reward sums, dpo_options::reward_model() (+ extras.margins)"});
    r.add("openrlhf/LogExpLoss", {[](const case_context& c, produced& out) { openrlhf_reward_pairwise(c, out, false); },
                                  float64_path,
                                  "preference::dpo over reward sums, dpo_options::reward_model() (log(1 + e^(r_l - r_w)) is the same "
                                  "function; its margin argument is ignored upstream)"});
    r.add("trl/cpo_loss", {trl_cpo_loss, float64_path,
                           "preference::dpo over sums, dpo_options::cpo(loss_type, beta, label_smoothing, alpha) or cpo_simpo(beta, simpo_gamma, ...)"});
    r.add("simpo/simpo_loss", {simpo_loss, float64_path,
                               "preference::dpo over length-averaged sums, dpo_options::simpo(beta, gamma_beta_ratio, label_smoothing, loss_type)"});
    r.add("trl/DPOTrainer._compute_loss",
          {trl_compute_loss, float64_path,
           "token_log_probs of the shifted logits, preference::dpo over tokens (chosen / rejected halves) with "
           "dpo_options::trl(loss_type list, beta, label_smoothing) (+ ld_alpha, f-divergence, wpo_weights), backward to logits"});
    r.add("simpo/get_batch_loss_metrics",
          {simpo_batch_loss_metrics, float64_path,
           "token_log_probs (ignore -100), preference::simpo over tokens with dpo_options::simpo(...) (+ sft term), backward to logits"});
    r.deviations.push_back({"trl/DPOTrainer._compute_loss", "*exo_pair*", "exo_pair_float32_epsilon",
                            "TRL builds exo_pair's epsilon as torch.tensor(label_smoothing), a float32, so its log(1 - eps) and "
                            "log(eps) carry float32 rounding of 1e-3 (about 2e-8 relative in the loss); posttrain uses eps in "
                            "double. Compared at 1e-6.",
                            float32_path});
    r.deviations.push_back({"simpo/get_batch_loss_metrics", "*zero_length*", "zero_length_response",
                            "SimPO divides a response's log-prob sum by its label count with no guard, so an empty response "
                            "makes the loss and every gradient NaN; posttrain averages over max(n, 1) (an empty response has "
                            "average 0) and stays finite"});
    r.deviations.push_back({"trl/dpo_loss", "*sft*", "sft_nll_from_model_output",
                            "TRL <= 0.28 'sft' returns model_output['nll_loss'], an NLL computed outside dpo_loss; posttrain's sft "
                            "term computes the NLL from the chosen log-probs (checked by the DPOTrainer._compute_loss sft cases)"});
}

}  // namespace conformance
