#pragma once
// Loss aggregation: how a [B, T] matrix of per-token losses becomes the scalar the optimiser sees.
//
// Every mode is one formula, loss = multiplier / divisor * sum_i f(n_i) * sum_t L[i,t] * m[i,t], with
// n_i = sum_t m[i,t] the row's token count:
//
//   token_mean               f = 1        divisor = total tokens (global_tokens, else this batch's)
//   token_sum                f = 1        divisor = 1
//   seq_mean_token_mean      f = 1/n_i    divisor = sequences (global_sequences, else this batch's)
//   seq_mean_token_sum       f = 1        divisor = sequences
//   seq_mean_token_sum_norm  f = 1        divisor = norm_constant (T when 0) [* sequences]
//
// The global normalizers are the point: a data-parallel trainer that divides by its own rank's token
// count weights ranks unequally (the field's most reported loss bug). Pass the all-reduced counts
// (count_tokens gives this rank's) and multiplier = world size to cancel the framework's gradient
// averaging. A divisor of 0 (nothing valid anywhere) gives loss 0 and gradient 0, not NaN.

#include <algorithm>
#include <variant>
#include <vector>

#include "../advantage/tokens.hpp"

namespace posttrain::policy_loss {

enum class aggregation {
    token_mean,
    token_sum,
    seq_mean_token_mean,
    seq_mean_token_sum,
    seq_mean_token_sum_norm,
};

// The per-sequence mean's denominator in seq_mean_token_mean.
enum class row_mean {
    exact,         // n_i; a row with no valid token contributes 0 (posttrain)
    plus_epsilon,  // n_i + 1e-8 (verl, OpenRLHF: visible at 1e-9 relative)
    at_least_one,  // max(n_i, 1) (TRL)
};

// Whether rows with no valid token count as sequences in this batch's sequence count.
enum class empty_rows {
    excluded,  // (verl, OpenRLHF: padding rows of a micro-batch are not sequences)
    counted,   // every row is a sequence (TRL, verl-agent)
};

struct aggregation_options {
    aggregation mode = aggregation::token_mean;
    double global_tokens = 0;     // > 0: valid tokens of the whole step (all ranks, all micro-batches)
    double global_sequences = 0;  // > 0: sequences of the whole step
    double norm_constant = 0;     // seq_mean_token_sum_norm divisor; 0: T (the mask's second extent)
    bool norm_per_sequence = false;  // seq_mean_token_sum_norm also divides by the sequence count
    double multiplier = 1;        // world size (verl, OpenRLHF) or 1 / accumulation steps (TRL)
    row_mean row_denominator = row_mean::exact;
    empty_rows empty = empty_rows::excluded;

    // verl agg_loss (snapshot b178a3c, Jan 2026): dp_size multiplies, fully masked rows are not
    // sequences, seq_mean_token_sum_norm divides by loss_scale_factor only (no dp_size, no batch).
    static constexpr aggregation_options verl(aggregation mode, double dp_size = 1, double batch_num_tokens = 0,
                                              double global_batch_size = 0, double loss_scale_factor = 0) {
        aggregation_options o;
        o.mode = mode;
        o.global_tokens = batch_num_tokens;
        o.global_sequences = global_batch_size;
        o.norm_constant = loss_scale_factor;
        o.multiplier = mode == aggregation::seq_mean_token_sum_norm ? 1 : dp_size;
        o.row_denominator = row_mean::plus_epsilon;
        return o;
    }
    // verl-agent's agg_loss (old verl masked_mean, micro-batch local): every row counts; a fully
    // masked row's token mean is 0/0 there (NaN); here it is 0 under row_mean::exact.
    static constexpr aggregation_options verl_agent(aggregation mode) {
        aggregation_options o;
        o.mode = mode;
        o.empty = empty_rows::counted;
        return o;
    }
    // OpenRLHF aggregate_loss: token level over the step's all-reduced tokens, or sample level (each
    // row's exact token mean; fully masked rows are not samples).
    static constexpr aggregation_options openrlhf(bool token_level = true, double dp_size = 1,
                                                  double batch_num_tokens = 0, double global_batch_size = 0) {
        aggregation_options o;
        o.mode = token_level ? aggregation::token_mean : aggregation::seq_mean_token_mean;
        o.global_tokens = batch_num_tokens;
        o.global_sequences = global_batch_size;
        o.multiplier = dp_size;
        return o;
    }
};

// What an aggregation used, so that a caller can log it or check its global counts.
struct [[nodiscard]] aggregate_result {
    double loss = 0;
    double tokens = 0;     // this batch's valid tokens (sum of mask weights)
    double sequences = 0;  // this batch's sequences under the options' empty_rows rule
    double divisor = 0;    // what the weighted sum was divided by
};

// This batch's token and sequence counts, to be all-reduced into the global normalizers.
struct [[nodiscard]] token_counts {
    double tokens = 0;
    double sequences = 0;          // rows with at least one valid token
    double rows = 0;               // all rows
};

namespace detail {

using posttrain::advantage::detail::check_no_alias;
using posttrain::advantage::detail::check_same_shape;
using posttrain::advantage::detail::for_each_row;
using posttrain::advantage::detail::mask_weight;
using posttrain::detail::require;
using posttrain::detail::str;
using posttrain::detail::where;

// The resolved aggregation of one batch: token (i, t) carries weight row_factor(n_i) * scale.
struct aggregation_plan {
    aggregation mode = aggregation::token_mean;
    row_mean row_denominator = row_mean::exact;
    double scale = 0;  // multiplier / divisor (0 when the divisor is 0)
    aggregate_result totals;

    POSTTRAIN_HD double row_factor(double n) const noexcept {
        if (mode != aggregation::seq_mean_token_mean) return scale;
        switch (row_denominator) {
            case row_mean::exact: return n != 0 ? scale / n : 0.0;
            case row_mean::plus_epsilon: return scale / (n + 1e-8);
            case row_mean::at_least_one: return scale / (n > 1 ? n : 1.0);
        }
        return scale;
    }
};

inline void check_aggregation_options(const aggregation_options& o, const char* fn) {
    const char* arg = "options.aggregation";
    require(o.global_tokens >= 0 && o.global_tokens == o.global_tokens, {fn, arg},
            "global_tokens must be >= 0 (0: this batch's count), found " + std::to_string(o.global_tokens));
    require(o.global_sequences >= 0 && o.global_sequences == o.global_sequences, {fn, arg},
            "global_sequences must be >= 0 (0: this batch's count), found " + std::to_string(o.global_sequences));
    require(o.norm_constant >= 0 && o.norm_constant == o.norm_constant, {fn, arg},
            "norm_constant must be >= 0 (0: T), found " + std::to_string(o.norm_constant));
    require(numeric::is_finite(o.multiplier), {fn, arg}, "multiplier must be finite, found " + std::to_string(o.multiplier));
    const int m = static_cast<int>(o.mode);
    require(m >= 0 && m <= static_cast<int>(aggregation::seq_mean_token_sum_norm), {fn, arg},
            "unknown aggregation mode " + str(m));
}

// Resolves the divisor of a batch of B rows of T tokens from its totals: the valid tokens and the
// rows with at least one (shared by plan_aggregation and the CUDA kernels, which count on the device).
POSTTRAIN_HD inline aggregation_plan resolve_plan(double tokens, double nonempty, index_t B, index_t T,
                                                  const aggregation_options& o) noexcept {
    aggregation_plan p;
    p.mode = o.mode;
    p.row_denominator = o.row_denominator;
    p.totals.tokens = tokens;
    p.totals.sequences = o.empty == empty_rows::counted ? double(B) : nonempty;
    const double sequences = o.global_sequences > 0 ? o.global_sequences : p.totals.sequences;
    double divisor = 1;
    switch (o.mode) {
        case aggregation::token_mean: divisor = o.global_tokens > 0 ? o.global_tokens : p.totals.tokens; break;
        case aggregation::token_sum: divisor = 1; break;
        case aggregation::seq_mean_token_mean:
        case aggregation::seq_mean_token_sum: divisor = sequences; break;
        case aggregation::seq_mean_token_sum_norm:
            divisor = (o.norm_constant > 0 ? o.norm_constant : double(T)) * (o.norm_per_sequence ? sequences : 1.0);
            break;
    }
    p.totals.divisor = divisor;
    p.scale = divisor != 0 ? o.multiplier / divisor : 0.0;
    return p;
}

// Resolves the divisor from the per-row token counts n[0..B) (summed in a fixed order).
inline aggregation_plan plan_aggregation(const std::vector<double>& n, index_t T, const aggregation_options& o) {
    const index_t B = index_t(n.size());
    const double tokens = posttrain::detail::fixed_order_sum(B, [&](index_t i) { return n[std::size_t(i)]; });
    double nonempty = 0;
    for (double x : n) nonempty += x != 0 ? 1 : 0;
    return resolve_plan(tokens, nonempty, B, T, o);
}

// Per-row token counts of a [B, T] mask (converted a chunk at a time, then summed in the fixed order).
template <class Policy, class M>
std::vector<double> row_token_counts(const Policy& p, tensor_view<const M, 2> m) {
    std::vector<double> n(static_cast<std::size_t>(m.extent(0)));
    const index_t T = m.extent(1);
    for_each_row(p, m.extent(0), T, [&](index_t i) {
        constexpr index_t chunk = 512;  // a multiple of the summation lanes: the order is that of one long sum
        double w[chunk];
        double acc[8] = {};
        for (index_t t0 = 0; t0 < T; t0 += chunk) {
            const index_t len = T - t0 < chunk ? T - t0 : chunk;
            for (index_t j = 0; j < len; ++j) w[j] = mask_weight(m(i, t0 + j));
            const index_t blocked = len - len % 8;
            posttrain::detail::accumulate_lanes(acc, w, blocked);
            for (index_t j = blocked; j < len; ++j) acc[j - blocked] += w[j];  // only in the last chunk
        }
        n[std::size_t(i)] = posttrain::detail::combine_lanes(acc);
    });
    return n;
}

// Sum over rows of per-row partial values, in row order (the same bits for every policy).
inline double sum_rows(const std::vector<double>& v) {
    return posttrain::detail::fixed_order_sum(index_t(v.size()), [&](index_t i) { return v[std::size_t(i)]; });
}

}  // namespace detail

// This rank's valid tokens and sequences (rows with a valid token): all-reduce them across ranks and
// micro-batches and pass the sums as aggregation_options::global_tokens / global_sequences.
template <class Policy, class Mask>
token_counts count_tokens(const Policy& policy, const Mask& mask) {
    static_assert(host_policy<Policy>, "posttrain::policy_loss::count_tokens: host policy expected");
    constexpr const char* fn = "posttrain::policy_loss::count_tokens";
    return std::visit(
        [&](auto m) {
            const auto n = detail::row_token_counts(policy, m);
            token_counts c;
            c.tokens = detail::sum_rows(n);
            for (double x : n) c.sequences += x != 0 ? 1 : 0;
            c.rows = double(n.size());
            return c;
        },
        posttrain::detail::mask_input<2>(mask, {fn, "mask"}));
}

// Aggregates a [B, T] loss matrix and writes d loss / d loss_mat (times grad_scale) into grad_loss_mat
// (posttrain::none skips it). Masked positions never reach the result, whatever they hold.
template <class Policy, class LossMat, class Mask, class Grad>
aggregate_result aggregate(const Policy& policy, const LossMat& loss_mat, const Mask& mask, Grad&& grad_loss_mat,
                           const aggregation_options& options = {}, double grad_scale = 1.0) {
    static_assert(host_policy<Policy>, "posttrain::policy_loss::aggregate: host policy expected");
    constexpr const char* fn = "posttrain::policy_loss::aggregate";
    detail::check_aggregation_options(options, fn);
    return std::visit(
        [&](auto L, auto m) {
            detail::check_same_shape(m, L, {fn, "mask"}, "loss_mat");
            const index_t B = L.extent(0), T = L.extent(1);
            const auto n = detail::row_token_counts(policy, m);
            const auto plan = detail::plan_aggregation(n, T, options);
            std::vector<double> row_sum(static_cast<std::size_t>(B));
            detail::for_each_row(policy, B, T, [&](index_t i) {
                // Masked positions may hold garbage (even inf or NaN): select, never multiply by 0.
                const double s = posttrain::detail::fixed_order_sum(T, [&](index_t t) {
                    const double w = detail::mask_weight(m(i, t));
                    return w != 0 ? double(L(i, t)) * w : 0.0;
                });
                row_sum[std::size_t(i)] = s * plan.row_factor(n[std::size_t(i)]);
            });
            if constexpr (!std::is_same_v<std::remove_cvref_t<Grad>, none_t>) {
                auto g = std::visit([](auto v) { return v; },
                                    posttrain::detail::floating_output<2>(grad_loss_mat, {fn, "grad_loss_mat"}));
                detail::check_same_shape(g, L, {fn, "grad_loss_mat"}, "loss_mat");
                detail::check_no_alias(g, L, {fn, "grad_loss_mat"}, "loss_mat");
                detail::check_no_alias(g, m, {fn, "grad_loss_mat"}, "mask");
                using G = typename decltype(g)::value_type;
                detail::for_each_row(policy, B, T, [&](index_t i) {
                    const double f = plan.row_factor(n[std::size_t(i)]) * grad_scale;
                    for (index_t t = 0; t < T; ++t) g(i, t) = static_cast<G>(f * detail::mask_weight(m(i, t)));
                });
            }
            aggregate_result r = plan.totals;
            r.loss = detail::sum_rows(row_sum);
            return r;
        },
        posttrain::detail::floating_input<2>(loss_mat, {fn, "loss_mat"}), posttrain::detail::mask_input<2>(mask, {fn, "mask"}));
}

}  // namespace posttrain::policy_loss
