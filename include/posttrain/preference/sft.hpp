#pragma once
// The supervised (negative log-likelihood) term over chosen responses: TRL's "sft" loss_type, the NLL
// half of ORPO, RPO's auxiliary term.
//
//   token_mean    (TRL):  L = -sum_i S_i / N,            N = sum_i n_i  (or options.normalizer)
//   sequence_mean:        L = -(1/B) sum_i S_i / max(n_i, 1)             (B or options.normalizer)
//   sequence_sum:         L = -(1/B) sum_i S_i          (SLiC-HF's regulariser: HALOs SLiCTrainer)
//
// with S_i the masked sum of the chosen log-probs of response i and n_i its token count. The gradient
// is a constant along each response: dL/dp_t = -m_t / N, -m_t / (B max(n_i, 1)), or -m_t / B.
//
// A batch without a single valid token (token_mean, no normalizer) has loss 0 and gradient 0, where
// TRL's cross-entropy would give 0/0 = NaN: an empty batch has nothing to learn, and a NaN would poison
// the caller's accumulated gradient. A response with n_i = 0 contributes 0 to the sequence mean but is
// still counted in B (the max(n, 1) rule of every length-normalised loss).

#include <cmath>
#include <string>
#include <vector>

#include "common.hpp"
#include "sequence.hpp"

namespace posttrain::preference {

enum class sft_normalization {
    token_mean,     // every valid token of the batch weighs the same (TRL "sft", ORPO's cross-entropy)
    sequence_mean,  // mean log-prob per response, then the mean over responses
    sequence_sum,   // summed log-prob per response, then the mean over responses (needs no lengths)
};

struct sft_options {
    sft_normalization normalization = sft_normalization::token_mean;
    // > 0: the global count the sum is divided by instead of the local one (tokens for token_mean,
    // responses for the sequence modes), so that each data-parallel rank's loss is a share of the global mean.
    double normalizer = 0;
    double grad_scale = 1.0;

    // TRL DPOTrainer loss_type "sft" / ORPOTrainer's nn.CrossEntropyLoss: token mean over the batch.
    static constexpr sft_options trl() { return {}; }
};

struct [[nodiscard]] sft_result {
    double loss = 0;
    double tokens = 0;      // valid tokens of the batch (sum of n_i; NaN for sums without lengths)
    index_t sequences = 0;  // responses
};

namespace detail {

// The loss and dL/dS_i (before grad_scale) of the SFT term over already reduced sequences.
struct sft_terms {
    double loss = 0;
    double tokens = 0;
    std::vector<double> coef;
};

inline void check_sft_options(sft_normalization normalization, double normalizer, where w) {
    const int n = static_cast<int>(normalization);
    require(n >= 0 && n <= static_cast<int>(sft_normalization::sequence_sum), w,
            "unknown sft_normalization " + str(n));
    require(normalizer >= 0 && numeric::is_finite(normalizer), w, "normalizer must be finite and >= 0 (0: the local count)");
}

inline sft_terms sft_terms_of(const sequence_values& v, sft_normalization normalization, double normalizer, where w) {
    const index_t B = index_t(v.sum.size());
    const bool lengths = normalization != sft_normalization::sequence_sum;
    for (index_t i = 0; lengths && i < B; ++i)
        require(!std::isnan(v.length[std::size_t(i)]), w,
                "the SFT term needs response lengths: give sequence_input::tokens or sequence_input::sums(sums, lengths)");
    sft_terms t;
    t.coef.assign(std::size_t(B), 0.0);
    t.tokens = fixed_order_sum(v.length.data(), B);  // NaN for sums without lengths (sequence_sum)
    if (normalization == sft_normalization::sequence_sum) {
        const double d = normalizer > 0 ? normalizer : double(B);
        if (d > 0) {
            t.loss = -fixed_order_sum(v.sum.data(), B) / d;
            for (auto& c : t.coef) c = -1.0 / d;
        }
    } else if (normalization == sft_normalization::token_mean) {
        const double d = normalizer > 0 ? normalizer : t.tokens;
        if (d > 0) {
            t.loss = -fixed_order_sum(v.sum.data(), B) / d;
            for (auto& c : t.coef) c = -1.0 / d;
        }
    } else {
        const double d = normalizer > 0 ? normalizer : double(B);
        if (d > 0) {
            std::vector<double> mean(static_cast<std::size_t>(B));
            for (index_t i = 0; i < B; ++i) {
                const double n = std::fmax(v.length[std::size_t(i)], 1.0);
                mean[std::size_t(i)] = v.sum[std::size_t(i)] / n;
                t.coef[std::size_t(i)] = -1.0 / (n * d);
            }
            t.loss = -fixed_order_sum(mean.data(), B) / d;
        }
    }
    return t;
}

}  // namespace detail

// SFT / NLL loss over the chosen responses, with grad_scale * dL/d(log-probs) written into `grad`
// ([B, T] for tokens, [B] for sums; posttrain::none skips it). The summed form needs lengths.
template <class Policy>
sft_result sft(const Policy& policy, const sequence_input& chosen, const sequence_grad& grad, const sft_options& options = {}) {
    static_assert(host_policy<Policy>, "posttrain::preference::sft: host policy expected");
    constexpr const char* fn = "posttrain::preference::sft";
    detail::check_sft_options(options.normalization, options.normalizer, {fn, "options"});
    detail::require(numeric::is_finite(options.grad_scale), {fn, "options"}, "grad_scale must be finite");
    const auto v = detail::reduce(policy, chosen, chosen.batch(), {fn, "chosen"});
    auto t = detail::sft_terms_of(v, options.normalization, options.normalizer, {fn, "chosen"});
    for (auto& c : t.coef) c *= options.grad_scale;
    detail::broadcast(policy, chosen, t.coef, grad, {fn, "grad"});
    return {t.loss, t.tokens, chosen.batch()};
}

}  // namespace posttrain::preference
