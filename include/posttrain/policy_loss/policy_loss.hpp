#pragma once
// The fused policy-gradient loss: one call per optimisation step reads [B, T] views of the current
// and old log-probs, the advantages and the mask (and optionally reference / rollout log-probs,
// importance weights, entropies), and returns the aggregated loss with the metrics the frameworks log,
// writing d loss / d log_probs into a caller view in the same pass.
//
// The loss of token (i, t) is
//   L[i,t] = objective(log_probs, old_log_probs, A)[i,t] * keep[i,t] * rho[i,t] + beta * KL[i,t]
// aggregated by policy_loss::aggregate's rule, minus entropy_coef times the aggregated entropy. keep
// holds the detached masks (off-policy sequence mask, top-entropy mask) and rho the detached
// train/inference importance weights. The objectives, their framework names and their gradients are
// on docs/algorithms/policy_loss.md.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "../core/random.hpp"
#include "aggregate.hpp"
#include "kl.hpp"
#include "token_math.hpp"

namespace posttrain::policy_loss {

enum class objective {
    ppo_clip,         // max(-A r, -A clip(r, 1-low, 1+high)), optional dual clip and delta cap (PPO, GRPO, DAPO, GSPO, LUSPO)
    cispo,            // -sg(clip(r)) A logp (verl: [1-low, 1+high]; TRL: min(r, high) with cispo_bounds::absolute)
    sapo,             // -A sigmoid(tau (r - 1)) 4 / tau, tau = tau_pos for A > 0 else tau_neg
    gmpo,             // -mean_t(A) exp(mean_t(sign-aware clipped log r)) per sequence (verl geo_mean)
    policy_gradient,  // -A logp (verl gpg, REINFORCE; importance weights through rho)
    dro,              // -A logp + beta/2 (logp - old)^2 (Kimi-1.5, verl dro)
    clip_cov,         // PPO clip with the gradient of a few high-covariance tokens removed (verl clip_cov)
    kl_cov,           // -A r, plus coef |log r| on the top covariance tokens (verl kl_cov)
    dppo_tv,          // -A sg(min(r, cap)) logp on tokens inside the probability trust region (DPPO-TV)
    dppo_kl,          // same with the binary-KL trust region (DPPO-KL)
    vespo,            // -phi(w_seq) A logp, phi the gamma weighting of the sequence ratio (TRL vespo)
    topr,             // -A logp for A > 0, -sg(clamp(r, 0, 1)) A logp otherwise (TOPR)
};

// Where the importance ratio r lives.
enum class ratio_level {
    token,           // r = exp(logp - old) per token
    sequence,        // r = exp(mean_t(logp - old)) per sequence, gradient through the mean (TRL, OpenRLHF GSPO)
    sequence_token,  // value of the sequence ratio, gradient of the token's own (verl GSPO's stop-gradient form)
};

enum class cispo_bounds {
    relative,  // clamp(r, 1 - clip_low, 1 + clip_high) (verl, NeMo)
    absolute,  // min(r, clip_high) (TRL: epsilon_high is the cap itself, e.g. 5)
};

// Train/inference mismatch correction: rho from the behaviour (old) and rollout-engine log-probs.
enum class correction {
    none,
    token_truncate,     // rho_t = clamp(exp(old - rollout), lower, upper)              (TIS)
    token_mask,         // rho_t = exp(old - rollout) inside [lower, upper], else 0      (icepop, MIS)
    sequence_truncate,  // rho_i = clamp(exp(sum_t (old - rollout)), lower, upper)
    sequence_mask,      // rho_i = exp(sum_t (old - rollout)) inside [lower, upper], else 0 (TRL default)
    sequence_mask_token_weights,  // keep sequence iff exp(mean_t (old - rollout)) is inside [lower, upper];
                                  // rho_t = exp(old - rollout) unclamped (OpenRLHF seq-mask-tis)
};

struct mismatch_correction {
    correction mode = correction::none;
    double lower = 0;    // 0: no lower bound for the truncating modes
    double upper = 2.0;  // verl's default threshold
    double log_ratio_clamp = 20;  // clamp of (old - rollout) or its sequence sum before exp (verl); 0: none
    bool batch_normalize = false; // divide rho by its mean over valid tokens (token modes) or sequences (verl)

    // OpenRLHF's vllm_is_correction_type ("tis", "icepop" or "seq-mask-tis") with its
    // vllm_is_truncated_threshold [low, high]; the weight exp(old - rollout) is not clamped first.
    static mismatch_correction openrlhf(std::string_view type, double low, double high) {
        mismatch_correction m;
        if (type == "tis") m.mode = correction::token_truncate;
        else if (type == "icepop") m.mode = correction::token_mask;
        else if (type == "seq-mask-tis") m.mode = correction::sequence_mask_token_weights;
        else
            posttrain::detail::raise_invalid_argument("posttrain::policy_loss::mismatch_correction::openrlhf", "type",
                                                      "unknown correction \"" + std::string(type) +
                                                          "\" (expected tis, icepop or seq-mask-tis)");
        m.lower = low, m.upper = high, m.log_ratio_clamp = 0;
        return m;
    }
};

// Which tokens the entropy bonus averages.
enum class entropy_aggregation {
    same_as_loss,  // the loss's aggregation (verl)
    token_mean,    // a token mean over the (entropy-masked) tokens (TRL, except dapo/cispo/vespo)
};

struct options {
    objective loss = objective::ppo_clip;
    ratio_level level = ratio_level::token;
    double clip_low = 0.2;
    double clip_high = 0.2;
    double dual_clip = 0;             // c > 1: for A < 0 the loss is at most -c A (verl 3, OpenRLHF off); 0: off
    double delta = 0;                 // > 0: cap the unclipped ratio at delta (TRL two-sided clipping); 0: off
    double log_ratio_clamp = 20;      // clamp of logp - old before exp (verl, OpenRLHF); 0: none (TRL)
    double sequence_log_ratio_max = 0;  // > 0: cap the sequence log-ratio (verl GSPO: 10)
    cispo_bounds cispo = cispo_bounds::relative;
    double sapo_tau_pos = 1.0, sapo_tau_neg = 1.05;
    double dro_beta = 0.1;            // dro: weight of the squared log-ratio
    double cov_ratio = 0.0002;        // clip_cov / kl_cov: fraction of valid tokens selected
    double clip_cov_lower = 1.0, clip_cov_upper = 5.0;  // clip_cov: covariance window of the candidates
    double kl_cov_coef = 0.1;         // kl_cov: weight of |log r| on the selected tokens
    std::uint64_t seed = 0;           // clip_cov: seed of the candidate selection (see docs)
    double dppo_ratio_cap = 3.0;      // dppo: the truncated importance weight's cap
    double vespo_k_pos = 2.0, vespo_lambda_pos = 3.0, vespo_k_neg = 3.0, vespo_lambda_neg = 2.0;

    aggregation_options aggregation{};
    double kl_coef = 0;               // beta of the KL-to-reference term (needs ref_log_probs); 0: off
    kl_options kl{};
    bool kl_importance_weighted = false;  // multiply the KL by the (differentiable) ratio (TRL use_bias_correction_kl)
    mismatch_correction mismatch{};   // needs rollout_log_probs
    double off_policy_threshold = std::numeric_limits<double>::infinity();  // OPSM delta (TRL): drop tokens with
                                      // A < 0 in sequences whose mean(rollout - logp) exceeds it; inf: off
    double top_entropy_quantile = 1.0;  // rho < 1: keep tokens whose entropy is in the top rho (needs entropies)
    double entropy_coef = 0;          // entropy bonus weight (needs entropies; its logits gradient: entropy.hpp)
    entropy_aggregation entropy_mode = entropy_aggregation::same_as_loss;
    double grad_scale = 1.0;          // multiplies the written gradient (an autograd backward's upstream grad)

    // verl compute_policy_loss_<mode> (core_algos.py, b178a3c) with ActorConfig defaults: clip 0.2,
    // dual clip 3, log-ratio clamp 20, aggregation agg_loss(mode). gspo: sequence_token ratio capped at
    // 10, no dual clip; sapo and gspo aggregate seq-mean-token-mean whatever `mode` says; cispo and sapo
    // keep the clamp, clip_cov / kl_cov / geo_mean have none; geo_mean averages over every row.
    static options verl(objective o = objective::ppo_clip, policy_loss::aggregation mode = policy_loss::aggregation::token_mean) {
        options p;
        p.loss = o;
        p.dual_clip = o == objective::ppo_clip ? 3.0 : 0.0;
        if (o == objective::clip_cov || o == objective::kl_cov || o == objective::gmpo) p.log_ratio_clamp = 0;
        if (o == objective::sapo) mode = policy_loss::aggregation::seq_mean_token_mean;
        p.aggregation = aggregation_options::verl(mode);
        if (o == objective::gmpo) p.aggregation.empty = empty_rows::counted;
        p.kl = kl_options::verl(kl_estimator::k3);
        return p;
    }
    static options verl_gspo() {
        options p = verl(objective::ppo_clip, policy_loss::aggregation::seq_mean_token_mean);
        p.level = ratio_level::sequence_token;
        p.dual_clip = 0;
        p.log_ratio_clamp = 0;
        p.sequence_log_ratio_max = 10;
        p.clip_low = 0.0003, p.clip_high = 0.0004;
        return p;
    }
    // OpenRLHF PolicyLoss: ppo (clamp 20, dual clip off) or gspo (sequence ratio, sample-level loss).
    static options openrlhf(bool gspo = false, bool token_level_loss = true) {
        options p;
        p.level = gspo ? ratio_level::sequence : ratio_level::token;
        p.log_ratio_clamp = gspo ? 0 : 20;
        p.aggregation = aggregation_options::openrlhf(token_level_loss && !gspo);
        p.kl = kl_options::openrlhf(kl_estimator::k1);
        return p;
    }
    // TRL GRPOTrainer loss_type: "grpo" | "bnpo" | "dr_grpo" | "dapo" | "luspo" | "cispo" | "sapo" |
    // "vespo" (pass loss_type by its enum below). No log-ratio clamp, no dual clip, k3 KL unclamped.
    enum class trl_loss { grpo, bnpo, dr_grpo, dapo, luspo, cispo, sapo, vespo };
    static options trl(trl_loss t = trl_loss::dapo, double max_completion_length = 0, double grad_accum_steps = 1,
                       double num_items_in_batch = 0, double num_processes = 1) {
        options p;
        p.log_ratio_clamp = 0;
        p.kl = kl_options::trl();
        p.aggregation.empty = empty_rows::counted;
        p.aggregation.row_denominator = row_mean::at_least_one;
        p.aggregation.multiplier = 1.0 / grad_accum_steps;
        p.entropy_mode = entropy_aggregation::token_mean;
        switch (t) {
            case trl_loss::grpo: case trl_loss::sapo: p.aggregation.mode = policy_loss::aggregation::seq_mean_token_mean; break;
            case trl_loss::bnpo: p.aggregation.mode = policy_loss::aggregation::token_mean; break;
            case trl_loss::dr_grpo:
                p.aggregation.mode = policy_loss::aggregation::seq_mean_token_sum_norm;
                p.aggregation.norm_constant = max_completion_length;
                p.aggregation.norm_per_sequence = true;
                break;
            case trl_loss::luspo:
                p.aggregation.mode = policy_loss::aggregation::seq_mean_token_sum;
                p.level = ratio_level::sequence;
                break;
            case trl_loss::dapo: case trl_loss::cispo: case trl_loss::vespo:
                p.aggregation.mode = policy_loss::aggregation::token_mean;
                p.aggregation.global_tokens = num_items_in_batch > 1 ? num_items_in_batch : 1;
                p.aggregation.multiplier = num_processes;
                p.entropy_mode = entropy_aggregation::same_as_loss;
                break;
        }
        if (t == trl_loss::cispo) p.loss = objective::cispo, p.cispo = cispo_bounds::absolute, p.clip_high = 5.0;
        if (t == trl_loss::sapo) p.loss = objective::sapo;
        if (t == trl_loss::vespo) p.loss = objective::vespo;
        return p;
    }
};

namespace detail {

// An optional [B, T] input whose element type is decided at run time (absent when default-
// constructed): the extras of the host and the CUDA entry points. Make turns any adaptable tensor into
// a variant of tensor_view<const Elems, 2, Space>.
template <class Make, class Space, class... Elems>
class optional_view {
public:
    optional_view() = default;
    template <class X>
        requires(!std::is_same_v<std::remove_cvref_t<X>, optional_view>)
    optional_view(const X& x)  // NOLINT: implicit, so that designated initializers read naturally
        : view_(std::visit([](auto v) { return variant(v); }, Make{}(x))) {}

    bool present() const noexcept { return view_.index() != 0; }
    // The view, whose element type must be T (empty when absent).
    template <class T>
    tensor_view<const T, 2, Space> as(posttrain::detail::where w) const {
        if (!present()) return {};
        const auto* v = std::get_if<tensor_view<const T, 2, Space>>(&view_);
        posttrain::detail::require(v != nullptr, w, "must have the dtype of log_probs");
        return *v;
    }

private:
    using variant = std::variant<std::monostate, tensor_view<const Elems, 2, Space>...>;
    variant view_;
};

struct make_host_extra {
    template <class X>
    auto operator()(const X& x) const {
        return posttrain::detail::floating_input<2>(x, {"posttrain::policy_loss::extras", "input"});
    }
};

}  // namespace detail

// An optional input, [B, T] with the dtype of log_probs.
using optional_input = detail::optional_view<detail::make_host_extra, host_space, float, double>;

struct extras {
    optional_input ref_log_probs;      // KL term (kl_coef > 0)
    optional_input rollout_log_probs;  // mismatch correction, and the sampling log-probs of the OPSM test
    optional_input is_weights;         // precomputed detached importance weights multiplying the loss (verl rollout_is_weights)
    optional_input entropies;          // per-token entropies (top-entropy mask, entropy bonus); never differentiated here
};

// Sums over this batch's valid tokens (mask-weighted): all-reduce them to get global metrics; the
// member functions divide exactly (frameworks that add 1e-8 to the count do that on these sums).
struct metric_sums {
    double tokens = 0;
    double clipped_low = 0;            // the lower clip is active (ppo: A < 0 and r < 1 - low; cispo: r < 1 - low)
    double clipped_high = 0;           // the upper clip is active (ppo: A > 0 and r > 1 + high; cispo: r above its cap)
    double clipped_high_positive = 0;  // clipped_high on tokens with A > 0 (TRL cispo_clip_ratio)
    double dual_clipped = 0;           // the dual clip is active (verl pg_clipfrac_lower)
    double selected = 0;               // clip_cov / kl_cov tokens selected
    double neg_log_ratio = 0;          // sum of old - logp as clamped for the ratio (verl ppo_kl)
    double neg_log_ratio_raw = 0;      // sum of old - logp unclamped (OpenRLHF ppo_kl)
    double abs_log_ratio = 0;          // sum of |logp - old| (verl kl_cov ppo_kl)
    double ratio = 0;                  // sum of the ratio used by the objective
    double kl = 0;                     // sum of the KL term before kl_coef (times the ratio when importance weighted; TRL metric kl)
    double entropy = 0;                // sum of the entropies
    double rollout_minus_old = 0;      // sum of rollout - old (OpenRLHF vllm_kl)
    double kept = 0;                   // tokens kept by the off-policy and top-entropy masks
};

struct [[nodiscard]] loss_result {
    double loss = 0;          // what to minimise: policy term + KL term - entropy bonus
    double policy_loss = 0;   // the aggregated objective alone (times keep and rho)
    double kl_loss = 0;       // aggregated KL estimator (before kl_coef)
    double entropy_loss = 0;  // aggregated entropy (before entropy_coef)
    aggregate_result aggregation;
    metric_sums sums;
    double ratio_min = 0, ratio_max = 0;  // over valid tokens (per sequence under sequence levels)
    double seq_low_clip_min = 0;   // min over non-empty rows of the row's clipped_low fraction (TRL clip_ratio/low_min)
    double seq_high_clip_max = 0;  // max over non-empty rows of the clipped_high fraction (TRL clip_ratio/high_max)
    double phi_mean = 0;           // vespo: mean over rows of phi (TRL vespo/phi_seq_mean)
    double sequences_clipped_low = 0;   // rows with a clipped_low token (under sequence levels: rows whose ratio is clipped)
    double sequences_clipped_high = 0;

    double clip_fraction() const noexcept { return frac(sums.clipped_low + sums.clipped_high); }
    double clip_fraction_low() const noexcept { return frac(sums.clipped_low); }
    double clip_fraction_high() const noexcept { return frac(sums.clipped_high); }
    double dual_clip_fraction() const noexcept { return frac(sums.dual_clipped); }
    double approx_kl() const noexcept { return frac(sums.neg_log_ratio); }
    double ratio_mean() const noexcept { return frac(sums.ratio); }
    double kl_mean() const noexcept { return frac(sums.kl); }
    double entropy_mean() const noexcept { return frac(sums.entropy); }

private:
    double frac(double x) const noexcept { return sums.tokens > 0 ? x / sums.tokens : 0.0; }
};

namespace detail {

using posttrain::detail::fixed_order_sum;

// ---- per-token pieces shared by the host loops and the CUDA kernel (policy_loss.cuh) ----

// One token of a token-local objective (every objective but gmpo, clip_cov, kl_cov and vespo, which
// need their row or the batch), as a function of its log importance weight w: the value, d/dlp at
// fixed w, d/dw, the ratio e^w and which clip is active.
struct objective_eval {
    double value = 0, dlp = 0, dw = 0, ratio = 1;
    bool low = false, high = false, dual = false;
};

POSTTRAIN_HD inline objective_eval token_objective(const options& o, double x, double y, double a, double w) noexcept {
    objective_eval e;
    e.ratio = exp(w);
    const double ratio = e.ratio;
    switch (o.loss) {
        case objective::ppo_clip: {
            const clipped_surrogate s = ppo_surrogate(w, a, surrogate_params{o.clip_low, o.clip_high, o.dual_clip, o.delta});
            e.value = s.value, e.dw = s.dw, e.low = s.low_clipped, e.high = s.high_clipped, e.dual = s.dual_clipped;
            break;
        }
        case objective::cispo: {
            double rc = ratio;
            if (o.cispo == cispo_bounds::relative) {
                rc = clamp(ratio, 1.0 - o.clip_low, 1.0 + o.clip_high);
                e.low = ratio < 1.0 - o.clip_low;
                e.high = ratio > 1.0 + o.clip_high;
            } else {
                rc = ratio > o.clip_high ? o.clip_high : ratio;
                e.high = ratio > o.clip_high;
            }
            e.value = -rc * a * x, e.dlp = -rc * a;
            break;
        }
        case objective::sapo: {
            const double tau = a > 0 ? o.sapo_tau_pos : o.sapo_tau_neg;
            const double s = sigmoid(tau * (ratio - 1.0));
            e.value = -a * s * 4.0 / tau, e.dw = -a * 4.0 * s * (1.0 - s) * ratio;
            break;
        }
        case objective::policy_gradient: e.value = -a * x, e.dlp = -a; break;
        case objective::dro: {
            const double d = x - y;
            e.value = -a * x + 0.5 * o.dro_beta * d * d, e.dlp = -a + o.dro_beta * d;
            break;
        }
        case objective::dppo_tv:
        case objective::dppo_kl: {
            const double rt = ratio < o.dppo_ratio_cap ? ratio : o.dppo_ratio_cap;
            const double pr = exp(x), po = exp(y);
            bool valid;
            if (o.loss == objective::dppo_tv) {
                valid = a > 0 ? (pr - po <= o.clip_high) : (pr - po >= -o.clip_low);
            } else {
                using std::log;
                const double bkl = po * (y - x) + (1 - po) * log((1 - po + 1e-8) / (1 - pr + 1e-8));
                valid = a > 0 ? (bkl <= o.clip_high || pr <= po) : (bkl <= o.clip_low || pr >= po);
            }
            const double v = valid ? 1.0 : 0.0;
            e.value = -a * rt * x * v, e.dlp = -a * rt * v;
            e.high = !valid && a > 0, e.low = !valid && a <= 0;
            break;
        }
        case objective::topr: {
            const double wgt = a > 0 ? 1.0 : clamp(ratio, 0.0, 1.0);
            e.value = -wgt * a * x, e.dlp = -wgt * a;
            break;
        }
        default: break;  // gmpo, clip_cov, kl_cov, vespo: evaluated by the host loop itself
    }
    return e;
}

// The KL term of one token, before kl_coef: its value (times the ratio e^w when importance weighted),
// d/dlp at fixed w, d/dw (0 unless importance weighted), and d/dlp + d/dw (the token's whole derivative
// when w = lp - old passes its gradient).
struct kl_eval {
    double value = 0, dlp = 0, dw = 0, total = 0;
};

POSTTRAIN_HD inline kl_eval kl_term(const options& o, double x, double ref, double w) noexcept {
    const value_grad k = kl_token(x, ref, o.kl);
    kl_eval e{k.value, k.grad, 0.0, k.grad};
    if (o.kl_importance_weighted) {
        const double rr = exp(w);
        // k3 + dk3/dlp = (e^d - d - 1) + (1 - e^d) = -d exactly (d = ref - lp, where the gradient is
        // live): summing the two terms instead would cancel e^d, losing 1e-5 relative at d = 30 (and
        // differently under FMA contraction, so that host and device disagreed there).
        const bool k3_live = o.kl.estimator == kl_estimator::k3 && !o.kl.straight_through && k.grad != 0;
        const double sum = k3_live ? x - ref : k.value + k.grad;
        e.value = k.value * rr, e.dlp = k.grad * rr, e.dw = k.value * rr, e.total = sum * rr;
    }
    return e;
}

// Per-row quantities that need the whole row before any token's loss (sequence ratios, masks).
struct row_context {
    double n = 0;            // valid tokens
    double log_w = 0;        // sequence log-ratio (sequence levels) or vespo's log w
    double log_w_grad = 1;   // d log_w / d(mean log-ratio): 0 where a cap is active
    double adv_mean = 0;     // gmpo: the row's mean advantage
    double gmpo_log_ratio = 0;
    double seq_is = 1;       // gmpo: geometric mean of the importance weights
    double gmpo_loss = 0;    // gmpo: the row's loss -adv_mean * exp(gmpo_log_ratio) * seq_is
    double opsm_kl = 0;      // mean(rollout - logp) for the off-policy mask
    double rho_seq = 1;      // sequence-level mismatch weight (or keep flag)
    double phi = 0;          // vespo weighting (per sign of A: both kept)
    double phi_neg = 0;
};

// The per-row partial sums, reduced in row order at the end.
struct row_partial {
    double loss = 0, kl = 0, entropy = 0;
    metric_sums sums;
    double ratio_min = INFINITY, ratio_max = -INFINITY;
    double phi = 0;  // vespo: the row's weight
};

// A token flagged for clip_cov / kl_cov (row-major flat index).
inline std::vector<index_t> select_tokens(std::vector<std::pair<double, index_t>>& candidates, index_t k, bool top,
                                          std::uint64_t seed) {
    std::vector<index_t> out;
    if (k <= 0 || candidates.empty()) return out;
    const index_t m = index_t(candidates.size());
    if (k >= m) {
        for (auto& c : candidates) out.push_back(c.second);
    } else if (top) {
        // The k largest covariances; ties go to the lower flat index (torch.topk leaves them unspecified).
        std::partial_sort(candidates.begin(), candidates.begin() + k, candidates.end(), [](const auto& a, const auto& b) {
            return a.first > b.first || (a.first == b.first && a.second < b.second);
        });
        for (index_t j = 0; j < k; ++j) out.push_back(candidates[std::size_t(j)].second);
    } else {
        // A seeded uniform subset (verl draws it with torch.randperm): partial Fisher-Yates driven by
        // splitmix64, over the candidates in row-major order.
        splitmix64 rng(seed);
        for (index_t j = 0; j < k; ++j) {
            const index_t r = j + index_t(rng.below(std::uint64_t(m - j)));
            std::swap(candidates[std::size_t(j)], candidates[std::size_t(r)]);
            out.push_back(candidates[std::size_t(j)].second);
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

// torch.quantile(x, q) with linear interpolation.
inline double quantile(std::vector<double> x, double q) {
    const double pos = q * double(x.size() - 1);
    const std::size_t lo = std::size_t(pos);
    std::nth_element(x.begin(), x.begin() + std::ptrdiff_t(lo), x.end());
    const double a = x[lo];
    if (lo + 1 >= x.size()) return a;
    const double b = *std::min_element(x.begin() + std::ptrdiff_t(lo) + 1, x.end());
    return a + (b - a) * (pos - double(lo));
}

inline void check_options(const options& o, const char* fn) {
    const char* arg = "options";
    auto nonneg = [&](double v, const char* what) {
        require(v >= 0 && v == v, {fn, arg}, std::string(what) + " must be >= 0, found " + std::to_string(v));
    };
    nonneg(o.clip_low, "clip_low");
    nonneg(o.clip_high, "clip_high");
    nonneg(o.delta, "delta");
    nonneg(o.log_ratio_clamp, "log_ratio_clamp");
    nonneg(o.sequence_log_ratio_max, "sequence_log_ratio_max");
    nonneg(o.kl_coef, "kl_coef");
    nonneg(o.entropy_coef, "entropy_coef");
    nonneg(o.dro_beta, "dro_beta");
    nonneg(o.mismatch.lower, "mismatch.lower");
    nonneg(o.mismatch.log_ratio_clamp, "mismatch.log_ratio_clamp");
    require(o.mismatch.upper >= o.mismatch.lower, {fn, arg}, "mismatch.upper must be >= mismatch.lower");
    require(o.dual_clip == 0 || o.dual_clip > 1, {fn, arg},
            "dual_clip must be > 1 (or 0 to disable), found " + std::to_string(o.dual_clip));
    require(o.loss != objective::ppo_clip || o.clip_low <= 1, {fn, arg},
            "clip_low must be <= 1 (the lower ratio bound 1 - clip_low is negative), found " + std::to_string(o.clip_low));
    require(o.top_entropy_quantile > 0 && o.top_entropy_quantile <= 1, {fn, arg},
            "top_entropy_quantile must be in (0, 1], found " + std::to_string(o.top_entropy_quantile));
    require(o.sapo_tau_pos > 0 && o.sapo_tau_neg > 0, {fn, arg}, "sapo temperatures must be > 0");
    require(o.cov_ratio > 0 || (o.loss != objective::clip_cov && o.loss != objective::kl_cov), {fn, arg},
            "cov_ratio must be > 0");
    require(o.dppo_ratio_cap > 0, {fn, arg}, "dppo_ratio_cap must be > 0");
    require(numeric::is_finite(o.grad_scale), {fn, arg}, "grad_scale must be finite");
    const int l = int(o.loss);
    require(l >= 0 && l <= int(objective::topr), {fn, arg}, "unknown objective " + str(l));
    require(o.level == ratio_level::token ||
                o.loss == objective::ppo_clip || o.loss == objective::cispo || o.loss == objective::sapo,
            {fn, arg}, "sequence-level ratios apply to ppo_clip, cispo and sapo only");
    check_aggregation_options(o.aggregation, fn);
}

// Reduces the per-row partials in row order into the result.
inline loss_result summarize(const std::vector<row_partial>& parts, const aggregation_plan& plan, const options& o,
                             double entropy_loss) {
    const index_t B = index_t(parts.size());
    loss_result res;
    res.aggregation = plan.totals;
    std::vector<double> col(static_cast<std::size_t>(B));
    auto reduce = [&](auto get) {
        for (index_t i = 0; i < B; ++i) col[std::size_t(i)] = get(parts[std::size_t(i)]);
        return sum_rows(col);
    };
    res.policy_loss = reduce([](const row_partial& p) { return p.loss; });
    res.kl_loss = reduce([](const row_partial& p) { return p.kl; });
    metric_sums& s = res.sums;
#define POSTTRAIN_SUM(field) s.field = reduce([](const row_partial& p) { return p.sums.field; })
    POSTTRAIN_SUM(tokens);
    POSTTRAIN_SUM(clipped_low);
    POSTTRAIN_SUM(clipped_high);
    POSTTRAIN_SUM(clipped_high_positive);
    POSTTRAIN_SUM(dual_clipped);
    POSTTRAIN_SUM(selected);
    POSTTRAIN_SUM(neg_log_ratio);
    POSTTRAIN_SUM(neg_log_ratio_raw);
    POSTTRAIN_SUM(abs_log_ratio);
    POSTTRAIN_SUM(ratio);
    POSTTRAIN_SUM(kl);
    POSTTRAIN_SUM(entropy);
    POSTTRAIN_SUM(rollout_minus_old);
    POSTTRAIN_SUM(kept);
#undef POSTTRAIN_SUM
    res.entropy_loss = entropy_loss;
    res.loss = res.policy_loss + o.kl_coef * res.kl_loss - o.entropy_coef * res.entropy_loss;
    double rmin = INFINITY, rmax = -INFINITY, low_min = INFINITY, high_max = -INFINITY, phi_sum = 0;
    for (index_t i = 0; i < B; ++i) {
        const row_partial& p = parts[std::size_t(i)];
        rmin = std::min(rmin, p.ratio_min), rmax = std::max(rmax, p.ratio_max);
        if (p.sums.tokens > 0) {
            low_min = std::min(low_min, p.sums.clipped_low / p.sums.tokens);
            high_max = std::max(high_max, p.sums.clipped_high / p.sums.tokens);
        }
        phi_sum += p.phi;
        res.sequences_clipped_low += p.sums.clipped_low > 0 ? 1 : 0;
        res.sequences_clipped_high += p.sums.clipped_high > 0 ? 1 : 0;
    }
    res.ratio_min = B > 0 && s.tokens > 0 ? rmin : 0.0;
    res.ratio_max = B > 0 && s.tokens > 0 ? rmax : 0.0;
    res.seq_low_clip_min = low_min < INFINITY ? low_min : NAN;
    res.seq_high_clip_max = high_max > -INFINITY ? high_max : NAN;
    res.phi_mean = B > 0 ? phi_sum / double(B) : 0.0;
    return res;
}

// The first of a valid token's inputs that is not finite (absent extras have no data), or nullptr.
template <class T>
const char* nonfinite_input(tensor_view<const T, 2> lp, tensor_view<const T, 2> old, tensor_view<const T, 2> adv,
                            tensor_view<const T, 2> ref, tensor_view<const T, 2> rollout, tensor_view<const T, 2> isw,
                            index_t i, index_t t) noexcept {
    auto bad = [&](tensor_view<const T, 2> v) { return v.data() != nullptr && !numeric::is_finite(double(v(i, t))); };
    if (bad(lp)) return "log_probs";
    if (bad(old)) return "old_log_probs";
    if (bad(adv)) return "advantages";
    if (bad(ref)) return "extras.ref_log_probs";
    if (bad(rollout)) return "extras.rollout_log_probs";
    if (bad(isw)) return "extras.is_weights";
    return nullptr;
}

[[noreturn]] inline void raise_nonfinite(const char* fn, const char* argument, index_t i, index_t t) {
    posttrain::detail::raise_invalid_argument(fn, argument,
                                              "non-finite value at valid position [" + str(i) + ", " + str(t) +
                                                  "] (masked positions may hold anything)");
}

// Minimum of v[0..n) (no NaN), with vector extensions where available (order does not matter for a min).
inline double lanes_min(const double* v, index_t n) noexcept {
    double best = INFINITY;
    index_t j = 0;
#if defined(__GNUC__) && !defined(__CUDACC__)
    typedef double lanes_t __attribute__((vector_size(8 * sizeof(double))));
    lanes_t a = {INFINITY, INFINITY, INFINITY, INFINITY, INFINITY, INFINITY, INFINITY, INFINITY};
    for (; j + 8 <= n; j += 8) {
        lanes_t x;
        std::memcpy(&x, v + j, sizeof x);
        a = x < a ? x : a;
    }
    for (int l = 0; l < 8; ++l) best = a[l] < best ? a[l] : best;
#endif
    for (; j < n; ++j) best = v[j] < best ? v[j] : best;
    return best;
}

// The fast path: token-level PPO clip (with optional KL term and precomputed importance weights), the
// per-step hot loop of PPO/GRPO/DAPO trainers. Each row is processed in chunks: one branch-free,
// vectorizable loop evaluates the tokens and writes the gradient, then the chunk's values are summed
// in a fixed order (so the bits never depend on the policy or the thread count).
inline bool fast_path_applies(const options& o, bool has_rollout, bool has_ent) {
    return o.loss == objective::ppo_clip && o.level == ratio_level::token && o.off_policy_threshold == INFINITY &&
           o.top_entropy_quantile == 1 && o.mismatch.mode == correction::none && !o.kl_importance_weighted &&
           !has_rollout && !has_ent;
}

POSTTRAIN_NO_TRAPPING_MATH_BEGIN
template <bool HasRef, kl_estimator E, bool HasWeights, class T, class M, class GT>
void ppo_fast_row(const T* POSTTRAIN_RESTRICT lp, const T* POSTTRAIN_RESTRICT old, const T* POSTTRAIN_RESTRICT adv,
                  const M* POSTTRAIN_RESTRICT mask, const T* POSTTRAIN_RESTRICT ref, const T* POSTTRAIN_RESTRICT isw,
                  GT* POSTTRAIN_RESTRICT grad, index_t Tn, const options& o, double n_row, double gs, double wrow,
                  row_partial& p, index_t& bad) {
    constexpr index_t chunk = 256;
    double v_loss[chunk], v_kl[chunk], v_low[chunk], v_high[chunk], v_dual[chunk], v_nlr[chunk], v_raw[chunk],
        v_abs[chunk], v_ratio[chunk], v_rmin[chunk], v_rmax[chunk];
    const surrogate_params sp{o.clip_low, o.clip_high, o.dual_clip, o.delta};
    const double c = o.log_ratio_clamp > 0 ? o.log_ratio_clamp : INFINITY;
    const kl_options kl = o.kl;
    const double beta = o.kl_coef;
    double s_loss = 0, s_kl = 0, rmin = p.ratio_min, rmax = p.ratio_max;
    metric_sums& q = p.sums;
    for (index_t t0 = 0; t0 < Tn; t0 += chunk) {
        const index_t len = Tn - t0 < chunk ? Tn - t0 : chunk;
        for (index_t j = 0; j < len; ++j) {
            const index_t t = t0 + j;
            const double m = mask_value(mask[t]);
            const double x = double(lp[t]), y = double(old[t]), a = double(adv[t]);
            const double lr = x - y;
            const double lrc = lr > c ? c : (lr < -c ? -c : lr);
            const double pass = ((lr >= -c) & (lr <= c)) ? 1.0 : 0.0;
            const clipped_surrogate sg = ppo_surrogate(lrc, a, sp);
            const double f = HasWeights ? double(isw[t]) : 1.0;
            const double value = sg.value * f;  // the policy term (the KL term is summed apart)
            double dlp = sg.dw * f * pass, kv = 0;
            if constexpr (HasRef) {
                const value_grad k = kl_token_as<E>(x, double(ref[t]), kl);
                kv = k.value;
                dlp += beta * k.grad;
            }
            const bool valid = m != 0;
            grad[t] = GT(valid ? gs * m * dlp : 0.0);
            v_loss[j] = valid ? value * m : 0.0;
            v_kl[j] = valid ? kv * m : 0.0;
            v_low[j] = (valid & sg.low_clipped) ? m : 0.0;
            v_high[j] = (valid & sg.high_clipped) ? m : 0.0;
            v_dual[j] = (valid & sg.dual_clipped) ? m : 0.0;
            v_nlr[j] = valid ? -lrc * m : 0.0;
            v_raw[j] = valid ? -lr * m : 0.0;
            v_abs[j] = valid ? (lr < 0 ? -lr : lr) * m : 0.0;
            v_ratio[j] = valid ? sg.ratio * m : 0.0;
            v_rmin[j] = valid ? sg.ratio : INFINITY;  // reduced below: a conditional min blocks vectorization
            v_rmax[j] = valid ? -sg.ratio : INFINITY;  // negated: the max is minus a min
        }
        auto sum = [&](const double* v) { return fixed_order_sum(v, len); };
        const double chunk_loss = sum(v_loss), chunk_raw = sum(v_raw), chunk_kl = sum(v_kl);
        // A non-finite valid input makes the loss, the log-ratio or the KL sum non-finite; only then look
        // for it (an overflowing ratio without a clamp is not an input error and is left to propagate).
        if (bad < 0 && !(numeric::is_finite(chunk_loss) && numeric::is_finite(chunk_raw) && numeric::is_finite(chunk_kl)))
            for (index_t j = 0; j < len; ++j) {
                const index_t t = t0 + j;
                bool finite = numeric::is_finite(double(lp[t])) && numeric::is_finite(double(old[t])) &&
                              numeric::is_finite(double(adv[t]));
                if constexpr (HasRef) finite = finite && numeric::is_finite(double(ref[t]));
                if constexpr (HasWeights) finite = finite && numeric::is_finite(double(isw[t]));
                if (mask_value(mask[t]) != 0 && !finite) {
                    bad = t;
                    break;
                }
            }
        rmin = std::min(rmin, lanes_min(v_rmin, len));
        rmax = std::max(rmax, -lanes_min(v_rmax, len));
        s_loss += chunk_loss;
        s_kl += chunk_kl;
        q.clipped_low += sum(v_low);
        q.clipped_high += sum(v_high);
        q.dual_clipped += sum(v_dual);
        q.neg_log_ratio += sum(v_nlr);
        q.neg_log_ratio_raw += chunk_raw;
        q.abs_log_ratio += sum(v_abs);
        q.ratio += sum(v_ratio);
    }
    q.tokens = n_row;
    q.clipped_high_positive = q.clipped_high;
    p.ratio_min = rmin, p.ratio_max = rmax;
    q.kl = s_kl;
    q.kept = q.tokens;
    p.loss = s_loss * wrow;
    p.kl = s_kl * wrow;
}
POSTTRAIN_NO_TRAPPING_MATH_END

template <class Policy, class T, class M, class G>
loss_result run_fast(const Policy& policy, tensor_view<const T, 2> lp, tensor_view<const T, 2> old,
                     tensor_view<const T, 2> adv, tensor_view<const M, 2> mask, G grad, tensor_view<const T, 2> ref,
                     tensor_view<const T, 2> isw, const options& o, const char* fn) {
    const index_t B = lp.extent(0), Tn = lp.extent(1);
    const std::vector<double> n = row_token_counts(policy, mask);
    const aggregation_plan plan = plan_aggregation(n, Tn, o.aggregation);
    std::vector<row_partial> parts(static_cast<std::size_t>(B));
    std::vector<index_t> bad(static_cast<std::size_t>(B), -1);
    using GT = typename G::value_type;
    // Rows are contiguous along t when every view has unit stride there; otherwise gather the row.
    const bool unit = lp.stride(1) == 1 && old.stride(1) == 1 && adv.stride(1) == 1 && mask.stride(1) == 1 &&
                      (ref.data() == nullptr || ref.stride(1) == 1) && (isw.data() == nullptr || isw.stride(1) == 1) &&
                      (grad.data() == nullptr || grad.stride(1) == 1);
    if (Tn > 0) for_each_row(policy, B, Tn, [&](index_t i) {
        const double wrow = plan.row_factor(n[std::size_t(i)]);
        const double gs = wrow * o.grad_scale;
        // Bool masks are read as bytes (0/1): std::vector<bool> has no contiguous storage to gather into.
        using MB = std::conditional_t<std::is_same_v<M, bool>, unsigned char, M>;
        thread_local std::vector<T> buf;
        thread_local std::vector<MB> mbuf;
        thread_local std::vector<GT> gbuf;
        const T *a_lp, *a_old, *a_adv, *a_ref = nullptr, *a_isw = nullptr;
        const MB* a_m;
        GT* a_g = nullptr;
        if (unit) {
            a_lp = &lp(i, 0), a_old = &old(i, 0), a_adv = &adv(i, 0);
            a_m = reinterpret_cast<const MB*>(&mask(i, 0));
            if (ref.data()) a_ref = &ref(i, 0);
            if (isw.data()) a_isw = &isw(i, 0);
            if (grad.data()) a_g = &grad(i, 0);
        } else {
            buf.resize(std::size_t(5 * Tn));
            mbuf.resize(std::size_t(Tn));
            gbuf.resize(std::size_t(Tn));
            T* b = buf.data();
            for (index_t t = 0; t < Tn; ++t) {
                b[t] = lp(i, t), b[Tn + t] = old(i, t), b[2 * Tn + t] = adv(i, t), mbuf[std::size_t(t)] = static_cast<MB>(mask(i, t));
                if (ref.data()) b[3 * Tn + t] = ref(i, t);
                if (isw.data()) b[4 * Tn + t] = isw(i, t);
            }
            a_lp = b, a_old = b + Tn, a_adv = b + 2 * Tn, a_m = mbuf.data();
            if (ref.data()) a_ref = b + 3 * Tn;
            if (isw.data()) a_isw = b + 4 * Tn;
            a_g = gbuf.data();
        }
        if (a_g == nullptr) {  // no gradient wanted: write it to scratch, keeping the loop branch-free
            gbuf.resize(std::size_t(Tn));
            a_g = gbuf.data();
        }
        row_partial& p = parts[std::size_t(i)];
        index_t& b = bad[std::size_t(i)];
        // One instantiation per (KL estimator, weights) pair keeps the token loop free of branches.
        auto row = [&](auto has_ref, auto estimator, auto has_weights) {
            ppo_fast_row<decltype(has_ref)::value, decltype(estimator)::value, decltype(has_weights)::value>(
                a_lp, a_old, a_adv, a_m, a_ref, a_isw, a_g, Tn, o, n[std::size_t(i)], gs, wrow, p, b);
        };
        auto with_weights = [&](auto has_ref, auto estimator) {
            if (a_isw) row(has_ref, estimator, std::true_type{});
            else row(has_ref, estimator, std::false_type{});
        };
        using K = kl_estimator;
        if (!a_ref) with_weights(std::false_type{}, std::integral_constant<K, K::k3>{});
        else if (o.kl.estimator == K::k1) with_weights(std::true_type{}, std::integral_constant<K, K::k1>{});
        else if (o.kl.estimator == K::abs) with_weights(std::true_type{}, std::integral_constant<K, K::abs>{});
        else if (o.kl.estimator == K::k2) with_weights(std::true_type{}, std::integral_constant<K, K::k2>{});
        else with_weights(std::true_type{}, std::integral_constant<K, K::k3>{});
        if (!unit && grad.data())
            for (index_t t = 0; t < Tn; ++t) grad(i, t) = gbuf[std::size_t(t)];
    });
    for (index_t i = 0; i < B; ++i)
        if (const index_t t = bad[std::size_t(i)]; t >= 0)
            raise_nonfinite(fn, nonfinite_input(lp, old, adv, ref, tensor_view<const T, 2>{}, isw, i, t), i, t);
    return summarize(parts, plan, o, 0.0);
}

// The whole computation for one dtype T of the floating inputs and one mask type M.
template <class Policy, class T, class M, class G>
loss_result run(const Policy& policy, tensor_view<const T, 2> lp, tensor_view<const T, 2> old, tensor_view<const T, 2> adv,
                tensor_view<const M, 2> mask, G grad, tensor_view<const T, 2> ref, tensor_view<const T, 2> rollout,
                tensor_view<const T, 2> isw, tensor_view<const T, 2> ent, const extras& given, bool has_grad,
                const options& o, const char* fn) {
    const index_t B = lp.extent(0), Tn = lp.extent(1);
    // Presence comes from the caller's extras, not from data pointers (an empty batch has none).
    const bool has_ref = given.ref_log_probs.present(), has_rollout = given.rollout_log_probs.present();
    const bool has_isw = given.is_weights.present(), has_ent = given.entropies.present();
    const bool token_level = o.level == ratio_level::token;
    const bool spread = o.level == ratio_level::sequence;  // gradient through the sequence mean
    const bool opsm = o.off_policy_threshold < INFINITY;
    const double eps_row = o.aggregation.row_denominator == row_mean::plus_epsilon ? 1e-8 : 0.0;

    require(o.kl_coef == 0 || has_ref, {fn, "extras.ref_log_probs"}, "is required when kl_coef > 0");
    require(o.mismatch.mode == correction::none || has_rollout, {fn, "extras.rollout_log_probs"},
            "is required by the mismatch correction");
    require(!(o.top_entropy_quantile < 1 || o.entropy_coef > 0) || has_ent, {fn, "extras.entropies"},
            "are required by top_entropy_quantile < 1 and entropy_coef > 0");

    require(o.loss != objective::gmpo ||
                (o.mismatch.mode == correction::none && opsm == false && o.top_entropy_quantile == 1),
            {fn, "options"},
            "gmpo is a per-sequence loss: the token-level mismatch correction, off-policy mask and top-entropy "
            "mask do not apply to it (pass importance weights through extras.is_weights: gmpo takes their "
            "geometric mean per sequence)");
    if (fast_path_applies(o, has_rollout, has_ent)) return run_fast(policy, lp, old, adv, mask, grad, ref, isw, o, fn);

    auto m_at = [&](index_t i, index_t t) { return mask_weight(mask(i, t)); };
    // Log-ratio as the objective's ratio uses it, and whether its clamp passes the gradient.
    const double c = o.log_ratio_clamp;
    auto log_ratio = [&](index_t i, index_t t, double& pass) {
        const double r = double(lp(i, t)) - double(old(i, t));
        pass = 1;
        if (c > 0 && (r > c || r < -c)) {
            pass = 0;
            return r > c ? c : -c;
        }
        return r;
    };

    // ---- pass 1: per-row context, and validation of the valid positions ----
    std::vector<row_context> ctx(static_cast<std::size_t>(B));
    std::vector<index_t> bad(static_cast<std::size_t>(B), -1);
    for_each_row(policy, B, Tn, [&](index_t i) {
        row_context& r = ctx[std::size_t(i)];
        double n = 0, s_lr = 0, s_adv = 0, s_gm = 0, s_isw = 0, s_opsm = 0, s_roll = 0, s_vespo = 0;
        for (index_t t = 0; t < Tn; ++t) {
            const double m = m_at(i, t);
            if (m == 0) continue;
            const double a = double(adv(i, t)), x = double(lp(i, t)), y = double(old(i, t));
            if (bad[std::size_t(i)] < 0 && nonfinite_input(lp, old, adv, ref, rollout, isw, i, t) != nullptr)
                bad[std::size_t(i)] = t;
            n += m;
            const double lr = x - y;
            s_lr += lr * m;
            s_adv += a * m;
            if (o.loss == objective::gmpo) {
                const double sg = sign(a), lrc = clamp(lr, -o.clip_low, o.clip_high);
                s_gm += sg * std::min(sg * lr, sg * lrc) * m;
                if (has_isw) s_isw += std::log(double(isw(i, t)) + 1e-10) * m;
            }
            if (o.loss == objective::vespo) {
                s_vespo += clamp(lr, -20.0, 20.0) * m;
                if (has_isw) s_vespo += clamp(std::log(double(isw(i, t))), std::log(1e-8), 20.0) * m;
            }
            if (opsm) s_opsm += ((has_rollout ? double(rollout(i, t)) : y) - x) * m;
            if (has_rollout) s_roll += (y - double(rollout(i, t))) * m;
        }
        r.n = n;
        const double n1 = n > 1 ? n : 1.0;
        if (!token_level) {
            r.log_w = s_lr / n1;
            if (o.sequence_log_ratio_max > 0 && r.log_w > o.sequence_log_ratio_max)
                r.log_w = o.sequence_log_ratio_max, r.log_w_grad = 0;
        }
        if (o.loss == objective::gmpo) {
            r.adv_mean = s_adv / (n + eps_row);
            r.gmpo_log_ratio = s_gm / (n + eps_row);
            if (has_isw) r.seq_is = exp(s_isw / (n + eps_row));
            if (n + eps_row == 0) r.adv_mean = 0, r.gmpo_log_ratio = 0, r.seq_is = 1;  // an empty row: loss 0
            r.gmpo_loss = -r.adv_mean * exp(r.gmpo_log_ratio) * r.seq_is;
        }
        if (o.loss == objective::vespo) {
            const double lw = clamp(s_vespo, std::log(1e-8), 20.0), w = exp(lw);
            auto phi = [&](double k, double lam) {
                const double v = exp(lam + k * lw - lam * w);
                return numeric::is_finite(v) ? v : 0.0;
            };
            r.phi = phi(o.vespo_k_pos, std::max(o.vespo_lambda_pos, 1e-4));
            r.phi_neg = phi(o.vespo_k_neg, std::max(o.vespo_lambda_neg, 1e-4));
        }
        r.opsm_kl = s_opsm / n1;
        if (o.mismatch.mode == correction::sequence_truncate || o.mismatch.mode == correction::sequence_mask) {
            const double cl = o.mismatch.log_ratio_clamp;
            const double rho = exp(cl > 0 ? clamp(s_roll, -cl, cl) : s_roll);
            r.rho_seq = o.mismatch.mode == correction::sequence_truncate
                            ? clamp(rho, o.mismatch.lower, o.mismatch.upper)
                            : (rho >= o.mismatch.lower && rho <= o.mismatch.upper ? rho : 0.0);
        } else if (o.mismatch.mode == correction::sequence_mask_token_weights) {
            const double g = exp(n != 0 ? s_roll / n : NAN);  // a fully masked row: NaN fails the test
            r.rho_seq = (g >= o.mismatch.lower && g <= o.mismatch.upper) ? 1.0 : 0.0;
        }
    });
    for (index_t i = 0; i < B; ++i)
        if (const index_t t = bad[std::size_t(i)]; t >= 0)
            raise_nonfinite(fn, nonfinite_input(lp, old, adv, ref, rollout, isw, i, t), i, t);

    std::vector<double> n(static_cast<std::size_t>(B));
    for (index_t i = 0; i < B; ++i) n[std::size_t(i)] = ctx[std::size_t(i)].n;
    aggregation_options agg = o.aggregation;
    if (o.loss == objective::gmpo) agg.mode = aggregation::seq_mean_token_sum;  // one value per sequence, averaged
    const aggregation_plan plan = plan_aggregation(n, Tn, agg);
    // The KL and entropy terms are token terms: they aggregate by the caller's rule even under gmpo.
    const aggregation_plan token_plan = o.loss == objective::gmpo ? plan_aggregation(n, Tn, o.aggregation) : plan;

    // ---- batch-level selections ----
    auto rho_token = [&](index_t i, index_t t) {
        if (!has_rollout) return 1.0;
        double lr = double(old(i, t)) - double(rollout(i, t));
        const double cl = o.mismatch.log_ratio_clamp;
        switch (o.mismatch.mode) {
            case correction::token_truncate:
                return clamp(exp(cl > 0 ? clamp(lr, -cl, cl) : lr), o.mismatch.lower, o.mismatch.upper);
            case correction::token_mask: {
                const double rho = exp(cl > 0 ? clamp(lr, -cl, cl) : lr);
                return rho >= o.mismatch.lower && rho <= o.mismatch.upper ? rho : 0.0;
            }
            case correction::sequence_mask_token_weights: return exp(lr) * ctx[std::size_t(i)].rho_seq;
            case correction::sequence_truncate: case correction::sequence_mask: return ctx[std::size_t(i)].rho_seq;
            case correction::none: return 1.0;
        }
        return 1.0;
    };
    double rho_scale = 1;
    if (o.mismatch.batch_normalize && o.mismatch.mode != correction::none) {
        std::vector<double> part(static_cast<std::size_t>(B));
        const bool seq = o.mismatch.mode == correction::sequence_truncate || o.mismatch.mode == correction::sequence_mask;
        for_each_row(policy, B, Tn, [&](index_t i) {
            if (seq) {
                part[std::size_t(i)] = ctx[std::size_t(i)].n != 0 ? ctx[std::size_t(i)].rho_seq : 0.0;
                return;
            }
            part[std::size_t(i)] = fixed_order_sum(Tn, [&](index_t t) {
                const double m = m_at(i, t);
                return m != 0 ? rho_token(i, t) * m : 0.0;
            });
        });
        double count = 0;
        for (index_t i = 0; i < B; ++i) count += seq ? (ctx[std::size_t(i)].n != 0 ? 1 : 0) : ctx[std::size_t(i)].n;
        const double mean = count > 0 ? sum_rows(part) / count : 0.0;
        rho_scale = mean > 0 ? 1.0 / mean : 1.0;
    }

    double entropy_threshold = -INFINITY;
    if (o.top_entropy_quantile < 1) {
        std::vector<double> h;
        for (index_t i = 0; i < B; ++i)
            for (index_t t = 0; t < Tn; ++t)
                if (m_at(i, t) != 0) {
                    const double e = double(ent(i, t));
                    // A NaN would break the ordering the quantile's selection relies on.
                    if (!numeric::is_finite(e)) raise_nonfinite(fn, "extras.entropies", i, t);
                    h.push_back(e);
                }
        entropy_threshold = h.empty() ? INFINITY : quantile(std::move(h), 1.0 - o.top_entropy_quantile);
    }

    // clip_cov / kl_cov: the selected tokens (flat row-major indices, sorted).
    std::vector<index_t> selected;
    if (o.loss == objective::clip_cov || o.loss == objective::kl_cov) {
        double tokens = 0, s_adv = 0, s_lp = 0;
        index_t count = 0;
        for (index_t i = 0; i < B; ++i)
            for (index_t t = 0; t < Tn; ++t) {
                const double m = m_at(i, t);
                if (m == 0) continue;
                tokens += m, s_adv += double(adv(i, t)) * m, s_lp += double(lp(i, t)) * m, ++count;
            }
        const double mean_adv = tokens != 0 ? s_adv / tokens : 0.0, mean_lp = tokens != 0 ? s_lp / tokens : 0.0;
        std::vector<std::pair<double, index_t>> cand;
        for (index_t i = 0; i < B; ++i)
            for (index_t t = 0; t < Tn; ++t) {
                if (m_at(i, t) == 0) continue;
                const double a = double(adv(i, t)), cov = (a - mean_adv) * (double(lp(i, t)) - mean_lp);
                if (o.loss == objective::clip_cov) {
                    const double lr = double(lp(i, t)) - double(old(i, t));
                    const auto s = ppo_surrogate(lr, a, {o.clip_low, o.clip_high, 0, 0});
                    if (s.low_clipped || s.high_clipped) continue;  // already clipped by PPO
                    if (!(cov > o.clip_cov_lower && cov < o.clip_cov_upper)) continue;
                }
                cand.push_back({cov, i * Tn + t});
            }
        const index_t k = o.loss == objective::clip_cov ? std::max<index_t>(index_t(o.cov_ratio * tokens), 1)
                                                        : (count > 0 ? std::max<index_t>(index_t(double(count) * o.cov_ratio), 1) : 0);
        selected = select_tokens(cand, k, o.loss == objective::kl_cov, o.seed);
    }
    auto is_selected = [&](index_t i, index_t t) {
        return !selected.empty() && std::binary_search(selected.begin(), selected.end(), i * Tn + t);
    };

    // ---- pass 2: token losses, gradients, metrics ----
    std::vector<row_partial> parts(static_cast<std::size_t>(B));
    using GT = typename G::value_type;
    for_each_row(policy, B, Tn, [&](index_t i) {
        const row_context& r = ctx[std::size_t(i)];
        row_partial& p = parts[std::size_t(i)];
        const double wrow = plan.row_factor(r.n);        // aggregation weight of this row's policy term
        const double wkl = token_plan.row_factor(r.n);   // ... and of its KL term
        double seq_dw = 0;  // sequence level: sum over the row of dL/d log_w (already weighted)
        double s_loss = 0, s_kl = 0, s_ent = 0;
        const bool gmpo = o.loss == objective::gmpo;
        for (index_t t = 0; t < Tn; ++t) {
            const double m = m_at(i, t);
            if (m == 0) {
                if (has_grad) grad(i, t) = GT(0);
                continue;
            }
            const double x = double(lp(i, t)), y = double(old(i, t)), a = double(adv(i, t));
            double pass = 1;
            const double lr_token = log_ratio(i, t, pass);
            const double w = token_level ? lr_token : r.log_w;
            double value = 0, dlp = 0, dw = 0;  // token loss, d/dlp (direct), d/d w
            double ratio = exp(w);
            bool lo_clip = false, hi_clip = false, dual = false;
            switch (o.loss) {
                case objective::clip_cov: {
                    const auto sg = ppo_surrogate(w, a, {o.clip_low, o.clip_high, 0, 0});
                    const double corr = is_selected(i, t) ? 0.0 : 1.0;
                    value = sg.value * corr, dw = sg.dw * corr;
                    lo_clip = sg.low_clipped, hi_clip = sg.high_clipped;
                    break;
                }
                case objective::kl_cov: {
                    value = -a * ratio, dw = -a * ratio;
                    if (is_selected(i, t)) {
                        value += o.kl_cov_coef * std::fabs(w);
                        dw += o.kl_cov_coef * sign(w);
                    }
                    break;
                }
                case objective::gmpo: {
                    // Per-sequence loss -mean(A) exp(mean lr_min): its gradient reaches each token through lr_min.
                    const double lr = x - y, sg = sign(a), lrc = clamp(lr, -o.clip_low, o.clip_high);
                    const pick mw = min_weights(sg * lr, sg * lrc);
                    const double dmin = sg * sg * (mw.a + mw.b * clamp_grad(lr, -o.clip_low, o.clip_high));
                    ratio = exp(r.gmpo_log_ratio);
                    dlp = r.gmpo_loss * dmin / (r.n + eps_row);
                    hi_clip = lr != lrc && a > 0;
                    lo_clip = lr != lrc && a < 0;
                    break;  // the value is the row's, added once below
                }
                case objective::vespo: {
                    const double phi = a >= 0 ? r.phi : r.phi_neg;
                    value = -phi * a * x, dlp = -phi * a;
                    ratio = phi;
                    break;
                }
                default: {  // the token-local objectives, shared with the CUDA kernel
                    const objective_eval e = token_objective(o, x, y, a, w);
                    value = e.value, dlp = e.dlp, dw = e.dw, ratio = e.ratio;
                    lo_clip = e.low, hi_clip = e.high, dual = e.dual;
                    break;
                }
            }
            // Detached multipliers: the off-policy and entropy masks and the mismatch weights.
            double keep = 1;
            if (opsm && !(a >= 0 || r.opsm_kl <= o.off_policy_threshold)) keep = 0;
            if (o.top_entropy_quantile < 1 && !(double(ent(i, t)) >= entropy_threshold)) keep = 0;
            double rho = o.loss == objective::vespo ? 1.0 : rho_token(i, t) * rho_scale;
            if (has_isw && o.loss != objective::vespo && o.loss != objective::gmpo) rho *= double(isw(i, t));
            const double f = keep * rho;
            value *= f, dlp *= f, dw *= f;
            if (token_level) dlp += dw * pass, dw = 0;
            else if (!spread) dlp += dw * r.log_w_grad, dw = 0;  // sequence_token: the token's own log-prob
            // KL to the reference (not masked by keep/rho), times the ratio when importance weighted
            // (whose gradient then also flows through the ratio's log-weight w).
            double kv = 0, kl_dlp = 0, kl_dw = 0;
            if (has_ref) {
                const kl_eval k = kl_term(o, x, double(ref(i, t)), w);
                kv = k.value, kl_dlp = k.dlp, kl_dw = k.dw;
                if (token_level) kl_dlp = pass != 0 ? k.total : k.dlp, kl_dw = 0;
                else if (!spread) kl_dlp += kl_dw * r.log_w_grad, kl_dw = 0;
            }
            const double kl_scale = wkl * o.kl_coef;
            if (has_grad) grad(i, t) = GT(o.grad_scale * m * (wrow * dlp + kl_scale * kl_dlp));
            seq_dw += m * (wrow * dw + kl_scale * kl_dw);
            s_loss += value * m;
            s_kl += kv * m;
            const double h = has_ent ? double(ent(i, t)) : 0.0;
            s_ent += h * m * keep;
            metric_sums& q = p.sums;
            q.clipped_low += lo_clip ? m : 0.0;
            q.clipped_high += hi_clip ? m : 0.0;
            q.clipped_high_positive += hi_clip && a > 0 ? m : 0.0;
            q.dual_clipped += dual ? m : 0.0;
            q.selected += (o.loss == objective::clip_cov || o.loss == objective::kl_cov) && is_selected(i, t) ? m : 0.0;
            q.neg_log_ratio += -(token_level || gmpo ? lr_token : r.log_w) * m;
            q.neg_log_ratio_raw += (y - x) * m;
            q.abs_log_ratio += std::fabs(x - y) * m;
            q.ratio += ratio * m;
            q.kl += kv * m;
            q.entropy += h * m;
            q.rollout_minus_old += has_rollout ? (double(rollout(i, t)) - y) * m : 0.0;
            q.kept += keep * m;
            p.ratio_min = std::min(p.ratio_min, ratio);
            p.ratio_max = std::max(p.ratio_max, ratio);
        }
        p.sums.tokens = r.n;  // counted in pass 1
        if (gmpo) s_loss = r.gmpo_loss;  // aggregated as a per-sequence value
        // Sequence level: d log_w / d lp_t = m_t / max(n, 1) (times the cap's pass-through).
        if (spread && has_grad && seq_dw != 0) {
            const double add = o.grad_scale * seq_dw * r.log_w_grad / (r.n > 1 ? r.n : 1.0);
            for (index_t t = 0; t < Tn; ++t) {
                const double m = m_at(i, t);
                if (m != 0) grad(i, t) = GT(double(grad(i, t)) + add * m);
            }
        }
        if (o.loss == objective::vespo) {
            // The row's phi: by token where it has valid tokens, else by the sign of its first advantage.
            p.phi = p.sums.tokens > 0 ? p.sums.ratio / p.sums.tokens
                                      : (Tn > 0 && double(adv(i, 0)) < 0 ? r.phi_neg : r.phi);
        }
        p.loss = s_loss * wrow;
        p.kl = s_kl * wkl;
        p.entropy = s_ent;
    });

    double entropy_loss = 0;
    if (has_ent) {
        // Entropy bonus: aggregated like the loss, or as a token mean over the kept tokens.
        std::vector<double> rows(static_cast<std::size_t>(B));
        const bool token_mean = o.entropy_mode == entropy_aggregation::token_mean;
        for (index_t i = 0; i < B; ++i)
            rows[std::size_t(i)] = parts[std::size_t(i)].entropy * (token_mean ? 1.0 : token_plan.row_factor(ctx[std::size_t(i)].n));
        entropy_loss = sum_rows(rows);
        if (token_mean) {
            double kept = 0;
            for (const auto& p : parts) kept += p.sums.kept;
            entropy_loss = kept > 0 ? entropy_loss / kept * o.aggregation.multiplier : 0.0;
        }
    }
    return summarize(parts, plan, o, entropy_loss);
}

}  // namespace detail

// The fused loss. log_probs, old_log_probs, advantages and the extras share one floating dtype; the
// mask may be any arithmetic type or bool. grad_log_probs ([B, T], or posttrain::none) receives
// d loss / d log_probs * options.grad_scale; masked positions get 0.
template <class Policy, class LogProbs, class OldLogProbs, class Advantages, class Mask, class Grad>
loss_result compute(const Policy& policy, const LogProbs& log_probs, const OldLogProbs& old_log_probs,
                    const Advantages& advantages, const Mask& mask, Grad&& grad_log_probs, const options& opts = {},
                    const extras& extra = {}) {
    static_assert(host_policy<Policy>, "posttrain::policy_loss::compute: host policy expected");
    constexpr const char* fn = "posttrain::policy_loss::compute";
    detail::check_options(opts, fn);
    return std::visit(
        [&](auto lp, auto m) {
            using T = typename decltype(lp)::value_type;
            using CT = std::remove_const_t<T>;
            auto same = [&](const auto& x, const char* name) {
                auto v = posttrain::detail::floating_input<2>(x, {fn, name});
                static_assert(std::variant_size_v<decltype(v)> > 1 ||
                                  std::is_same_v<std::variant_alternative_t<0, decltype(v)>, tensor_view<const CT, 2>>,
                              "posttrain::policy_loss::compute: old_log_probs, advantages and the extras must have the "
                              "element type of log_probs");
                const auto* p = std::get_if<tensor_view<const CT, 2>>(&v);
                detail::require(p != nullptr, {fn, name}, "must have the dtype of log_probs");
                detail::check_same_shape(*p, lp, {fn, name}, "log_probs");
                return *p;
            };
            const auto old = same(old_log_probs, "old_log_probs");
            const auto adv = same(advantages, "advantages");
            detail::check_same_shape(m, lp, {fn, "mask"}, "log_probs");
            auto optional = [&](const optional_input& in, const char* name) {
                const auto v = in.as<CT>({fn, name});
                if (v.data() != nullptr) detail::check_same_shape(v, lp, {fn, name}, "log_probs");
                return v;
            };
            const auto ref = optional(extra.ref_log_probs, "extras.ref_log_probs");
            const auto rollout = optional(extra.rollout_log_probs, "extras.rollout_log_probs");
            const auto isw = optional(extra.is_weights, "extras.is_weights");
            const auto ent = optional(extra.entropies, "extras.entropies");
            if constexpr (std::is_same_v<std::remove_cvref_t<Grad>, none_t>) {
                return detail::run(policy, lp, old, adv, m, tensor_view<CT, 2>{}, ref, rollout, isw, ent, extra, false,
                                   opts, fn);
            } else {
                auto gv = posttrain::detail::floating_output<2>(grad_log_probs, {fn, "grad_log_probs"});
                auto* g = std::get_if<tensor_view<CT, 2>>(&gv);
                detail::require(g != nullptr, {fn, "grad_log_probs"}, "must have the dtype of log_probs");
                detail::check_same_shape(*g, lp, {fn, "grad_log_probs"}, "log_probs");
                detail::check_no_alias(*g, lp, {fn, "grad_log_probs"}, "log_probs");
                detail::check_no_alias(*g, old, {fn, "grad_log_probs"}, "old_log_probs");
                detail::check_no_alias(*g, adv, {fn, "grad_log_probs"}, "advantages");
                detail::check_no_alias(*g, m, {fn, "grad_log_probs"}, "mask");
                detail::check_no_alias(*g, ref, {fn, "grad_log_probs"}, "extras.ref_log_probs");
                detail::check_no_alias(*g, rollout, {fn, "grad_log_probs"}, "extras.rollout_log_probs");
                detail::check_no_alias(*g, isw, {fn, "grad_log_probs"}, "extras.is_weights");
                detail::check_no_alias(*g, ent, {fn, "grad_log_probs"}, "extras.entropies");
                return detail::run(policy, lp, old, adv, m, *g, ref, rollout, isw, ent, extra, true, opts, fn);
            }
        },
        posttrain::detail::floating_input<2>(log_probs, {fn, "log_probs"}),
        posttrain::detail::mask_input<2>(mask, {fn, "mask"}));
}

}  // namespace posttrain::policy_loss
