#pragma once
// Reproducible prompt samplers: weighted draws with replacement (Walker/Vose alias method) and
// without replacement (Efraimidis–Spirakis exponential keys), uniform permutations, MMR1's mixed
// curriculum sampler (Leng et al. 2025, verl/curriculum/samplers.py), stratified sampling by score
// buckets, and MMR1's sequential padding (PaddedSequentialSampler, pad_list).
//
// Every random number is Philox4x32-10 (core/random.hpp) addressed by (seed, stream, draw index):
// draw d never depends on draws before it, so exec::seq, exec::par and exec::thrust (thrust/
// sampling.hpp) return the same indices for the same seed, and a run can be replayed from its seed.
// Streams: the caller's stream s for purpose p is counter word (s << 8 | p), so one seed serves
// every purpose (alias draws, keys, permutations, ...) without two of them sharing numbers.

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "../core/error.hpp"
#include "../core/exec.hpp"
#include "../core/numeric.hpp"
#include "../core/random.hpp"
#include "../core/traits.hpp"
#include "../adapt/std.hpp"
#include "../core/view.hpp"

namespace posttrain::sampling {

// What a weighted sampler does when every weight is zero (e.g. MMR1 weights after min–max scaling of
// all-equal scores): there is no distribution to draw from.
enum class zero_weights {
    uniform,  // draw as if every weight were equal (posttrain's default); reported in the result
    error,    // invalid_argument, as torch's multinomial raises (MMR1 parity)
};

// Which use of a seed a stream serves (the low 8 bits of the Philox stream word).
enum class purpose : std::uint64_t {
    alias_draw = 1,
    exponential_key = 2,
    permutation = 3,
    stratified = 4,
    curriculum_pool = 5,
    curriculum_shuffle = 6,
    filter = 7,
    pf_ppo_select = 8,
};

struct weighted_options {
    std::uint64_t seed = 0;
    std::uint64_t stream = 0;  // independent draws from one seed: an epoch, a step, a regeneration (< 2^56)
    zero_weights all_zero = zero_weights::uniform;
};

struct permutation_options {
    std::uint64_t seed = 0;
    std::uint64_t stream = 0;
};

struct [[nodiscard]] sample_result {
    index_t drawn = 0;              // indices written
    bool uniform_fallback = false;  // every weight was zero and the draw was uniform
};

namespace detail {

using posttrain::detail::require;
using posttrain::detail::str;
using posttrain::detail::where;

POSTTRAIN_HD constexpr std::uint64_t stream_word(std::uint64_t stream, purpose p) noexcept {
    return (stream << 8) | static_cast<std::uint64_t>(p);
}

inline void check_stream(std::uint64_t stream, where w) {
    require(stream < (std::uint64_t{1} << 56), w, "stream must be below 2^56 (its low 8 bits name the purpose)");
}

// Weights read once as doubles (torch's WeightedRandomSampler converts to float64 too), checked.
struct checked_weights {
    std::vector<double> w;
    double total = 0;
    index_t positive = 0;
    bool uniform_fallback = false;
};

inline checked_weights check_weights(std::vector<double> w, zero_weights all_zero, where at) {
    checked_weights c;
    const index_t n = static_cast<index_t>(w.size());
    require(n > 0, at, "at least one weight is needed");
    for (index_t i = 0; i < n; ++i) {
        const double v = w[static_cast<std::size_t>(i)];
        require(numeric::is_finite(v), at, "weight " + str(i) + " is not finite");
        require(v >= 0, at, "weight " + str(i) + " is negative");
        c.positive += v > 0;
    }
    c.total = posttrain::detail::fixed_order_sum(w.data(), n);
    require(numeric::is_finite(c.total), at, "the weights' sum overflows");
    if (c.positive == 0) {
        require(all_zero == zero_weights::uniform, at,
                "every weight is zero: no distribution to draw from (zero_weights::uniform draws uniformly)");
        std::fill(w.begin(), w.end(), 1.0);
        c.total = static_cast<double>(n);
        c.positive = n;
        c.uniform_fallback = true;
    }
    c.w = std::move(w);
    return c;
}

template <class Weights>
checked_weights read_weights(const Weights& weights, zero_weights all_zero, where at) {
    return std::visit(
        [&](auto v) {
            std::vector<double> w(static_cast<std::size_t>(v.extent(0)));
            for (index_t i = 0; i < v.extent(0); ++i) w[static_cast<std::size_t>(i)] = static_cast<double>(v(i));
            return check_weights(std::move(w), all_zero, at);
        },
        posttrain::detail::floating_input<1>(weights, at));
}

// A floating [N] input as doubles, every entry finite, at least one.
template <class Scores>
std::vector<double> read_finite(const Scores& scores, where at) {
    return std::visit(
        [&](auto v) {
            std::vector<double> out(static_cast<std::size_t>(v.extent(0)));
            for (index_t i = 0; i < v.extent(0); ++i) {
                out[static_cast<std::size_t>(i)] = static_cast<double>(v(i));
                require(numeric::is_finite(out[static_cast<std::size_t>(i)]), at, "entry " + str(i) + " is not finite");
            }
            require(!out.empty(), at, "at least one entry is needed");
            return out;
        },
        posttrain::detail::floating_input<1>(scores, at));
}

// Runs body(view) on the caller's index output (any integer type), after checking that the largest
// index to be written, n - 1, fits its element type (n < 0: the output's own length).
template <class Out, class Body>
decltype(auto) with_index_output(Out&& out, index_t n, where at, Body&& body) {
    return std::visit(
        [&](auto o) -> decltype(auto) {
            using E = std::remove_const_t<typename decltype(o)::value_type>;
            if (n < 0) n = o.extent(0);
            require(n <= 0 || static_cast<std::uint64_t>(n - 1) <= static_cast<std::uint64_t>(std::numeric_limits<E>::max()),
                    at, "element type too narrow for index " + str(n - 1));
            return body(o);
        },
        posttrain::detail::dispatch_view<false, 1, host_space, posttrain::detail::id_elems>::make(std::forward<Out>(out), at));
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Alias method (Walker 1977; Vose 1991): O(n) table, O(1) per draw, exact up to double rounding.

struct alias_table {
    std::vector<double> prob;    // probability of keeping the column drawn
    std::vector<index_t> alias;  // the index taken otherwise
    bool uniform_fallback = false;
};

namespace detail {

// Vose's build from checked weights. Work lists are processed in index order, so the table (and
// every draw) depends only on the weights. Zero weights keep prob 0, so they are never drawn even
// when rounding leaves them on the small list at the end.
inline alias_table build_alias_table(const checked_weights& c) {
    const index_t n = static_cast<index_t>(c.w.size());
    alias_table t;
    t.prob.assign(static_cast<std::size_t>(n), 1.0);
    t.alias.resize(static_cast<std::size_t>(n));
    t.uniform_fallback = c.uniform_fallback;
    std::vector<double> p(static_cast<std::size_t>(n));
    std::vector<index_t> small, large;
    index_t first_positive = -1;
    for (index_t i = 0; i < n; ++i) {
        const double w = c.w[static_cast<std::size_t>(i)];
        p[static_cast<std::size_t>(i)] = w / c.total * static_cast<double>(n);
        t.alias[static_cast<std::size_t>(i)] = i;
        if (w > 0 && first_positive < 0) first_positive = i;
        (p[static_cast<std::size_t>(i)] < 1.0 ? small : large).push_back(i);
    }
    while (!small.empty() && !large.empty()) {
        const index_t s = small.back(), l = large.back();
        small.pop_back();
        t.prob[static_cast<std::size_t>(s)] = p[static_cast<std::size_t>(s)];
        t.alias[static_cast<std::size_t>(s)] = l;
        double& pl = p[static_cast<std::size_t>(l)];
        pl = (pl + p[static_cast<std::size_t>(s)]) - 1.0;
        if (pl < 1.0) {
            large.pop_back();
            small.push_back(l);
        }
    }
    // Left over only through rounding: their mass is 1 up to an ulp, except for zero weights.
    for (index_t s : small) {
        if (c.w[static_cast<std::size_t>(s)] > 0) continue;
        t.prob[static_cast<std::size_t>(s)] = 0.0;
        t.alias[static_cast<std::size_t>(s)] = first_positive;
    }
    return t;
}

// Draw d from an alias table: Philox block (stream, d); words 0-1 pick the column, words 2-3 the coin.
struct alias_draw {
    const double* prob;
    const index_t* alias;
    index_t n;
    philox4x32_10 gen;
    std::uint64_t stream;
    POSTTRAIN_HD index_t operator()(index_t d) const {
        const philox_block b = gen.block(stream, static_cast<std::uint64_t>(d));
        index_t col = static_cast<index_t>(unit_closed_open(philox_word64(b.v[1], b.v[0])) * static_cast<double>(n));
        if (col >= n) col = n - 1;  // u * n can round up to n only for n near 2^53
        return unit_closed_open(philox_word64(b.v[3], b.v[2])) < prob[col] ? col : alias[col];
    }
};

// Efraimidis–Spirakis key of item i in log form: E_i / w_i with E_i ~ Exp(1) (ascending key order is
// A-Res's descending u^(1/w) order, without pow's underflow for small weights). Zero weight: +inf.
struct exponential_key {
    const double* w;
    philox4x32_10 gen;
    std::uint64_t stream;
    POSTTRAIN_HD double operator()(index_t i) const {
        using std::log;
        const philox_block b = gen.block(stream, static_cast<std::uint64_t>(i));
        const double e = -log(unit_open_closed(philox_word64(b.v[1], b.v[0])));
        if (!(w[i] > 0)) return HUGE_VAL;  // HUGE_VAL: +inf, usable in device code
        // A subnormal weight can overflow e / w to +inf; cap it below the zero weights' key, so that a
        // positive weight is always drawn before any zero weight.
        const double key = e / w[i];
        return key < DBL_MAX ? key : DBL_MAX;
    }
};

// Uniform permutation key of item i: 64 random bits (ties, of probability ~n^2/2^65, go by index).
struct permutation_key {
    philox4x32_10 gen;
    std::uint64_t stream;
    POSTTRAIN_HD std::uint64_t operator()(index_t i) const {
        const philox_block b = gen.block(stream, static_cast<std::uint64_t>(i));
        return philox_word64(b.v[1], b.v[0]);
    }
};

// Fills keys[i] = key(i) (any policy gives the same keys), then orders [0, n) by (key, index) and
// keeps the first k: the one total order every backend reproduces (Thrust: stable sort by key).
template <class Policy, class Key>
std::vector<index_t> smallest_keys(const Policy& policy, index_t n, index_t k, const Key& key) {
    using K = decltype(key(index_t{0}));
    std::vector<K> keys(static_cast<std::size_t>(n));
    posttrain::detail::for_blocks(policy, n, 16, [&](index_t lo, index_t hi) {
        for (index_t i = lo; i < hi; ++i) keys[static_cast<std::size_t>(i)] = key(i);
    });
    std::vector<index_t> order(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
    const auto less = [&](index_t a, index_t b) {
        const K ka = keys[static_cast<std::size_t>(a)], kb = keys[static_cast<std::size_t>(b)];
        return ka < kb || (ka == kb && a < b);
    };
    std::partial_sort(order.begin(), order.begin() + k, order.end(), less);
    order.resize(static_cast<std::size_t>(k));
    return order;
}

template <class O>
void write_indices(O out, const std::vector<index_t>& idx) {
    using E = std::remove_const_t<typename O::value_type>;
    for (index_t i = 0; i < out.extent(0); ++i) out(i) = static_cast<E>(idx[static_cast<std::size_t>(i)]);
}

// The argument checks and Philox setup of sample_with_replacement, shared by every backend:
// fill(out, draw) writes draw(d) to out(d) for every d.
template <class Out, class Fill>
sample_result alias_draws(const alias_table& table, Out& indices, const weighted_options& options, Fill&& fill) {
    constexpr const char* fn = "posttrain::sampling::sample_with_replacement";
    const index_t n = static_cast<index_t>(table.prob.size());
    require(n > 0 && table.alias.size() == table.prob.size(), {fn, "table"}, "empty or inconsistent alias table");
    require(!(table.uniform_fallback && options.all_zero == zero_weights::error), {fn, "table"},
            "was built from all-zero weights (a uniform table) and options.all_zero is zero_weights::error");
    check_stream(options.stream, {fn, "options.stream"});
    const alias_draw draw{table.prob.data(), table.alias.data(), n, philox4x32_10(options.seed),
                          stream_word(options.stream, purpose::alias_draw)};
    return with_index_output(indices, n, {fn, "indices"}, [&](auto out) {
        fill(out, draw);
        return sample_result{out.extent(0), table.uniform_fallback};
    });
}

// The argument checks and Philox setup of sample_without_replacement, shared by every backend:
// smallest(n, k, key) returns the indices of the k smallest keys in key order.
template <class Weights, class Out, class Smallest>
sample_result smallest_key_draws(const Weights& weights, Out& indices, const weighted_options& options,
                                 Smallest&& smallest) {
    constexpr const char* fn = "posttrain::sampling::sample_without_replacement";
    check_stream(options.stream, {fn, "options.stream"});
    const checked_weights c = read_weights(weights, options.all_zero, {fn, "weights"});
    const index_t n = static_cast<index_t>(c.w.size());
    return with_index_output(indices, n, {fn, "indices"}, [&](auto out) {
        const index_t k = out.extent(0);
        require(k <= c.positive, {fn, "indices"},
                "asks for " + str(k) + " distinct items but only " + str(c.positive) + " have a positive weight");
        const exponential_key key{c.w.data(), philox4x32_10(options.seed), stream_word(options.stream, purpose::exponential_key)};
        write_indices(out, smallest(n, k, key));
        return sample_result{k, c.uniform_fallback};
    });
}

}  // namespace detail

// The alias table of `weights` (float or double, >= 0, finite, not all zero unless all_zero ==
// uniform). Build it once to draw many times with sample_with_replacement(policy, table, ...).
template <class Weights>
alias_table make_alias_table(const Weights& weights, zero_weights all_zero = zero_weights::uniform) {
    return detail::build_alias_table(
        detail::read_weights(weights, all_zero, {"posttrain::sampling::make_alias_table", "weights"}));
}

// indices[d] ~ Categorical(w / sum w), independently for d = 0..len(indices)-1, draw d from Philox
// (seed, stream, d). Zero-weight items are never drawn.
template <class Policy, class Out>
    requires host_policy<Policy>
sample_result sample_with_replacement(const Policy& policy, const alias_table& table, Out&& indices,
                                      const weighted_options& options = {}) {
    return detail::alias_draws(table, indices, options, [&](auto out, const detail::alias_draw& draw) {
        using E = std::remove_const_t<typename decltype(out)::value_type>;
        posttrain::detail::for_blocks(policy, out.extent(0), 8, [&](index_t lo, index_t hi) {
            for (index_t d = lo; d < hi; ++d) out(d) = static_cast<E>(draw(d));
        });
    });
}

template <class Policy, class Weights, class Out>
    requires host_policy<Policy>
sample_result sample_with_replacement(const Policy& policy, const Weights& weights, Out&& indices,
                                      const weighted_options& options = {}) {
    const alias_table t = detail::build_alias_table(detail::read_weights(
        weights, options.all_zero, {"posttrain::sampling::sample_with_replacement", "weights"}));
    return sample_with_replacement(policy, t, std::forward<Out>(indices), options);
}

// len(indices) = k distinct items, drawn successively with probability proportional to weight among
// those not yet drawn (Efraimidis–Spirakis A-Res): the k smallest keys E_i / w_i, ties by index, in
// key order (indices[0] is the first draw). k may not exceed the number of positive weights.
template <class Policy, class Weights, class Out>
    requires host_policy<Policy>
sample_result sample_without_replacement(const Policy& policy, const Weights& weights, Out&& indices,
                                         const weighted_options& options = {}) {
    return detail::smallest_key_draws(weights, indices, options, [&](index_t n, index_t k, const detail::exponential_key& key) {
        return detail::smallest_keys(policy, n, k, key);
    });
}

// indices = a uniform random permutation of [0, len(indices)) (order by 64-bit Philox keys).
template <class Policy, class Out>
    requires host_policy<Policy>
void random_permutation(const Policy& policy, Out&& indices, const permutation_options& options = {}) {
    constexpr const char* fn = "posttrain::sampling::random_permutation";
    detail::check_stream(options.stream, {fn, "options.stream"});
    detail::with_index_output(indices, -1, {fn, "indices"}, [&](auto out) {
        const index_t n = out.extent(0);
        const detail::permutation_key key{philox4x32_10(options.seed), detail::stream_word(options.stream, purpose::permutation)};
        detail::write_indices(out, detail::smallest_keys(policy, n, n, key));
        return 0;
    });
}

// ---------------------------------------------------------------------------------------------
// MMR1's mixed curriculum sampler.
//
// One index list per "regeneration" (an epoch start or a weight update), cut into batches of B:
//   B_w = int(B * mixture_ratio) indices from N weighted draws with replacement, shuffled;
//   B_r = B - B_w consecutive entries of one permutation of [0, N) drawn at construction (the pool,
//         never reshuffled; a request running past its end restarts at 0, so the tail is skipped);
//   each batch interleaves w0, r0, w1, r1, ... and the tail batch (N mod B) splits int(rem * ratio)
//   / the rest. A regeneration starts the pool at consumed_batches * B_r mod N, so training resumes
//   where the consumed batches left it. Between regenerations the list is cached.
// Dataset smaller than the batch: the whole list is one tail batch of N (MMR1's behaviour).

// Replay hooks: a caller that must reproduce another generator (the conformance runner replays
// torch's recorded randperm / multinomial draws) supplies the draws; each hook left empty uses Philox.
struct mixed_curriculum_hooks {
    // The pool: a permutation of [0, N), filled once at construction.
    std::function<void(std::span<index_t> pool)> random_pool = {};
    // Regeneration k's N weighted draws with replacement (indices in [0, N)).
    std::function<void(index_t regeneration, std::span<const double> weights, std::span<index_t> draws)> weighted_draws = {};
    // Regeneration k's permutation of [0, N) that shuffles those draws (draws'[i] = draws[perm[i]]).
    std::function<void(index_t regeneration, std::span<index_t> perm)> weighted_shuffle = {};
};

struct mixed_curriculum_options {
    index_t batch_size = 1;     // B (MMR1: data.rollout_batch_size)
    double mixture_ratio = 0.5;  // lambda in [0, 1] (MMR1: data.curriculum_mixture_ratio)
    std::uint64_t seed = 0;      // Philox seed (MMR1: data.seed, through torch.Generator)
    zero_weights all_zero = zero_weights::uniform;
    mixed_curriculum_hooks replay = {};

    // MMR1's released behaviour: all-zero weights raise (torch: "invalid multinomial distribution").
    static mixed_curriculum_options mmr1(index_t batch_size, double mixture_ratio = 0.5, std::uint64_t seed = 0) {
        mixed_curriculum_options o;
        o.batch_size = batch_size;
        o.mixture_ratio = mixture_ratio;
        o.seed = seed;
        o.all_zero = zero_weights::error;
        return o;
    }
};

// When a trainer recomputes the curriculum weights (MMR1's data.curriculum_update_freq, T_update):
// after every `every_steps`-th global step, or at each epoch's end when every_steps is 0. A refresh
// is scores -> weights -> sampler.update_weights(...), which also drops the cached list.
struct refresh_schedule {
    index_t every_steps = 0;
    bool after_step(index_t global_step) const noexcept { return every_steps > 0 && global_step % every_steps == 0; }
    bool at_epoch_end() const noexcept { return every_steps == 0; }
};

class mixed_curriculum_sampler {
public:
    template <class Policy, class Weights>
        requires host_policy<Policy>
    mixed_curriculum_sampler(const Policy& policy, const Weights& weights, const mixed_curriculum_options& options)
        : opt_(options) {
        constexpr const char* fn = "posttrain::sampling::mixed_curriculum_sampler";
        detail::require(opt_.batch_size > 0, {fn, "options.batch_size"}, "must be positive");
        detail::require(opt_.mixture_ratio >= 0.0 && opt_.mixture_ratio <= 1.0, {fn, "options.mixture_ratio"},
                        "must lie in [0, 1]");
        set_weights(weights, {fn, "weights"});
        // Python's int() of the double product truncates: 100 * 0.29 = 28.999999999999996 -> 28.
        n_weighted_ = static_cast<index_t>(static_cast<double>(opt_.batch_size) * opt_.mixture_ratio);
        n_random_ = opt_.batch_size - n_weighted_;
        pool_.resize(static_cast<std::size_t>(size()));
        if (opt_.replay.random_pool) {
            opt_.replay.random_pool(std::span<index_t>(pool_));
            check_permutation(pool_, {fn, "options.replay.random_pool"});
        } else {
            // A purpose of its own: the pool must not equal regeneration 0's shuffle.
            const detail::permutation_key key{philox4x32_10(opt_.seed), detail::stream_word(0, purpose::curriculum_pool)};
            pool_ = detail::smallest_keys(policy, size(), size(), key);
        }
    }

    index_t size() const noexcept { return static_cast<index_t>(weights_.size()); }
    index_t weighted_per_batch() const noexcept { return n_weighted_; }
    index_t random_per_batch() const noexcept { return n_random_; }
    index_t consumed_batches() const noexcept { return consumed_; }
    // How many index lists have been generated so far (the next one is regeneration number this).
    index_t regenerations() const noexcept { return regenerations_; }
    bool cached() const noexcept { return has_cache_; }
    const std::vector<index_t>& random_pool() const noexcept { return pool_; }
    // Where the pool stands for the batches trained so far: consumed_batches * B_r mod N.
    index_t training_random_position() const noexcept {
        return size() > 0 ? (consumed_ * n_random_) % size() : 0;
    }

    // Where the pool stood when the cached list was generated.
    index_t random_position_start() const noexcept { return position_start_; }

    // The epoch's index list: the cached one, or a fresh regeneration (MMR1's __iter__).
    template <class Policy>
        requires host_policy<Policy>
    const std::vector<index_t>& indices(const Policy& policy) {
        if (!has_cache_) regenerate(policy);
        return cache_;
    }
    const std::vector<index_t>& indices() { return indices(exec::seq); }

    // One batch trained (MMR1's update_position_after_batch).
    void consume(index_t batches = 1) {
        detail::require(batches >= 0, {"posttrain::sampling::mixed_curriculum_sampler::consume", "batches"},
                        "must be non-negative");
        consumed_ += batches;
    }
    // Epoch start: the next indices() regenerates (MMR1's trainer sets cached_mixed_indices = None).
    void reset() noexcept { has_cache_ = false; }
    // New weights (same length); the cached list is dropped, the pool and its position kept.
    template <class Weights>
    void update_weights(const Weights& weights) {
        constexpr const char* fn = "posttrain::sampling::mixed_curriculum_sampler::update_weights";
        const index_t before = size();
        set_weights(weights, {fn, "weights"});
        detail::require(size() == before, {fn, "weights"}, "expected " + detail::str(before) + " weights");
        has_cache_ = false;
    }

private:
    template <class Weights>
    void set_weights(const Weights& weights, posttrain::detail::where at) {
        // Validity is checked now; the all-zero case only when a weighted draw is made (as in torch).
        detail::checked_weights c = detail::read_weights(weights, zero_weights::uniform, at);
        zero_fallback_ = c.uniform_fallback;
        if (c.uniform_fallback) std::fill(c.w.begin(), c.w.end(), 0.0);
        weights_ = std::move(c.w);
    }

    static void check_permutation(const std::vector<index_t>& p, posttrain::detail::where at) {
        std::vector<char> seen(p.size(), 0);
        for (index_t v : p) {
            detail::require(v >= 0 && v < static_cast<index_t>(p.size()) && !seen[static_cast<std::size_t>(v)], at,
                            "is not a permutation of [0, N)");
            seen[static_cast<std::size_t>(v)] = 1;
        }
    }

    template <class Policy>
    std::vector<index_t> weighted_draws(const Policy& policy, index_t k) {
        constexpr const char* fn = "posttrain::sampling::mixed_curriculum_sampler";
        const index_t n = size();
        detail::require(!zero_fallback_ || opt_.all_zero == zero_weights::uniform, {fn, "weights"},
                        "every weight is zero: invalid multinomial distribution (sum of probabilities <= 0)");
        std::vector<index_t> draws(static_cast<std::size_t>(n));
        if (opt_.replay.weighted_draws) {
            opt_.replay.weighted_draws(k, std::span<const double>(weights_), std::span<index_t>(draws));
            for (index_t v : draws)
                detail::require(v >= 0 && v < n, {fn, "options.replay.weighted_draws"}, "index out of [0, N)");
        } else {
            (void)sample_with_replacement(policy, weights_, draws,
                                          weighted_options{opt_.seed, static_cast<std::uint64_t>(k), zero_weights::uniform});
        }
        std::vector<index_t> perm(static_cast<std::size_t>(n));
        if (opt_.replay.weighted_shuffle) {
            opt_.replay.weighted_shuffle(k, std::span<index_t>(perm));
            check_permutation(perm, {fn, "options.replay.weighted_shuffle"});
        } else {
            const detail::permutation_key key{philox4x32_10(opt_.seed),
                                              detail::stream_word(static_cast<std::uint64_t>(k), purpose::curriculum_shuffle)};
            perm = detail::smallest_keys(policy, n, n, key);
        }
        std::vector<index_t> shuffled(static_cast<std::size_t>(n));
        for (index_t i = 0; i < n; ++i) shuffled[static_cast<std::size_t>(i)] = draws[static_cast<std::size_t>(perm[static_cast<std::size_t>(i)])];
        return shuffled;
    }

    // The next n entries of the pool, restarting at 0 when they would run past its end.
    void take_random(index_t n, index_t& pos, std::vector<index_t>& out) const {
        if (pos + n > size()) pos = 0;
        const index_t end = std::min(size(), pos + n);
        out.assign(pool_.begin() + pos, pool_.begin() + end);
        pos += n;
    }

    static void interleave(const index_t* w, index_t nw, const std::vector<index_t>& r, std::vector<index_t>& out) {
        const index_t nr = static_cast<index_t>(r.size());
        for (index_t i = 0; i < std::max(nw, nr); ++i) {
            if (i < nw) out.push_back(w[i]);
            if (i < nr) out.push_back(r[static_cast<std::size_t>(i)]);
        }
    }

    template <class Policy>
    void regenerate(const Policy& policy) {
        const index_t n = size(), b = opt_.batch_size;
        const std::vector<index_t> weighted = weighted_draws(policy, regenerations_);
        ++regenerations_;
        index_t pos = training_random_position();
        position_start_ = pos;
        cache_.clear();
        cache_.reserve(static_cast<std::size_t>(n));
        std::vector<index_t> rnd;
        const index_t batches = n / b, rem = n % b;
        for (index_t j = 0; j < batches; ++j) {
            take_random(n_random_, pos, rnd);
            interleave(weighted.data() + j * n_weighted_, n_weighted_, rnd, cache_);
        }
        if (rem > 0) {
            const index_t w_start = batches * n_weighted_;
            const index_t nw = std::min(static_cast<index_t>(static_cast<double>(rem) * opt_.mixture_ratio), n - w_start);
            take_random(rem - nw, pos, rnd);
            interleave(weighted.data() + w_start, nw, rnd, cache_);
        }
        has_cache_ = true;
    }

    mixed_curriculum_options opt_;
    std::vector<double> weights_;
    bool zero_fallback_ = false;
    index_t n_weighted_ = 0, n_random_ = 0;
    std::vector<index_t> pool_;
    std::vector<index_t> cache_;
    bool has_cache_ = false;
    index_t consumed_ = 0, regenerations_ = 0, position_start_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Stratified sampling by score buckets.

enum class bucketing {
    equal_width,  // K equal intervals of [min, max] (all-equal scores: one bucket)
    quantile,     // K buckets of (nearly) equal count by rank, ties by index
};

enum class allocation {
    proportional,  // bucket b gets k * n_b / N, largest remainders first (ties: lower bucket)
    equal,         // k / (non-empty buckets) each, capped at the bucket's size, the excess passed on
};

struct stratified_options {
    index_t buckets = 4;
    bucketing edges = bucketing::equal_width;
    allocation share = allocation::proportional;
    std::uint64_t seed = 0;
    std::uint64_t stream = 0;
};

struct [[nodiscard]] stratified_result {
    std::vector<index_t> bucket_size;   // items per bucket
    std::vector<index_t> bucket_drawn;  // items drawn per bucket (sums to len(indices))
};

namespace detail {

// draw * n_b (and rank * buckets) needs up to 126 bits when N exceeds 2^31.5.
#if defined(__SIZEOF_INT128__)
__extension__ using mul_div_t = unsigned __int128;
#else
using mul_div_t = std::uint64_t;  // exact while N < 2^32
#endif

inline std::vector<index_t> bucket_of(const std::vector<double>& s, const stratified_options& o) {
    const index_t n = static_cast<index_t>(s.size()), k = o.buckets;
    std::vector<index_t> b(static_cast<std::size_t>(n), 0);
    if (o.edges == bucketing::equal_width) {
        const auto [lo, hi] = std::minmax_element(s.begin(), s.end());
        // Halved, the range of finite scores cannot overflow (hi - lo can: -1e308 .. 1e308).
        const double half_width = *hi / 2 - *lo / 2;
        if (!(half_width > 0)) return b;
        for (index_t i = 0; i < n; ++i) {
            const double at = (s[static_cast<std::size_t>(i)] / 2 - *lo / 2) / half_width * static_cast<double>(k);
            b[static_cast<std::size_t>(i)] = static_cast<index_t>(std::clamp(at, 0.0, static_cast<double>(k - 1)));
        }
    } else {
        std::vector<index_t> order(static_cast<std::size_t>(n));
        for (index_t i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = i;
        std::sort(order.begin(), order.end(), [&](index_t a, index_t c) {
            const double x = s[static_cast<std::size_t>(a)], y = s[static_cast<std::size_t>(c)];
            return x < y || (x == y && a < c);
        });
        for (index_t r = 0; r < n; ++r)
            b[static_cast<std::size_t>(order[static_cast<std::size_t>(r)])] =
                static_cast<index_t>(static_cast<mul_div_t>(r) * static_cast<mul_div_t>(k) / static_cast<mul_div_t>(n));
    }
    return b;
}

inline std::vector<index_t> allocate(const std::vector<index_t>& size, index_t total, index_t draw, allocation a) {
    const std::size_t k = size.size();
    std::vector<index_t> q(k, 0);
    if (a == allocation::proportional) {
        // Hamilton's largest remainders in exact integer arithmetic.
        std::vector<index_t> rest(k);
        index_t given = 0;
        for (std::size_t b = 0; b < k; ++b) {
            const mul_div_t prod = static_cast<mul_div_t>(draw) * static_cast<mul_div_t>(size[b]);
            q[b] = static_cast<index_t>(prod / total);
            rest[b] = static_cast<index_t>(prod % total);
            given += q[b];
        }
        std::vector<std::size_t> order(k);
        for (std::size_t b = 0; b < k; ++b) order[b] = b;
        std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return rest[x] > rest[y]; });
        for (std::size_t j = 0; given < draw; ++j, ++given) ++q[order[j]];
        return q;
    }
    index_t left = draw;
    while (left > 0) {  // water filling: every round gives each bucket with room an equal share
        index_t open = 0;
        for (std::size_t b = 0; b < k; ++b) open += q[b] < size[b];
        const index_t share = std::max<index_t>(left / open, 1);
        for (std::size_t b = 0; b < k && left > 0; ++b) {
            const index_t give = std::min({share, size[b] - q[b], left});
            q[b] += give;
            left -= give;
        }
    }
    return q;
}

}  // namespace detail

// len(indices) = k distinct items: scores are cut into buckets, bucket b receives its allocation,
// and within a bucket the items are a uniform draw without replacement (smallest Philox keys).
// indices lists bucket 0's draws first, each bucket in key order.
template <class Policy, class Scores, class Out>
    requires host_policy<Policy>
stratified_result stratified_sample(const Policy& policy, const Scores& scores, Out&& indices,
                                    const stratified_options& options = {}) {
    constexpr const char* fn = "posttrain::sampling::stratified_sample";
    detail::require(options.buckets > 0 && options.buckets <= (index_t(1) << 32), {fn, "options.buckets"},
                    "must be in [1, 2^32], found " + detail::str(options.buckets));
    detail::check_stream(options.stream, {fn, "options.stream"});
    const std::vector<double> s = detail::read_finite(scores, {fn, "scores"});
    const index_t n = static_cast<index_t>(s.size());
    return detail::with_index_output(indices, n, {fn, "indices"}, [&](auto out) {
        const index_t k = out.extent(0);
        detail::require(k <= n, {fn, "indices"}, "asks for " + detail::str(k) + " distinct items of " + detail::str(n));
        const std::vector<index_t> bucket = detail::bucket_of(s, options);
        stratified_result r;
        r.bucket_size.assign(static_cast<std::size_t>(options.buckets), 0);
        for (index_t b : bucket) ++r.bucket_size[static_cast<std::size_t>(b)];
        r.bucket_drawn = detail::allocate(r.bucket_size, n, k, options.share);
        // One key per item for the whole call; sorting by (bucket, key, index) orders every bucket.
        const detail::permutation_key key{philox4x32_10(options.seed), detail::stream_word(options.stream, purpose::stratified)};
        const std::vector<index_t> order = detail::smallest_keys(policy, n, n, key);
        std::vector<index_t> start(static_cast<std::size_t>(options.buckets) + 1, 0);
        for (index_t b = 0; b < options.buckets; ++b)
            start[static_cast<std::size_t>(b) + 1] = start[static_cast<std::size_t>(b)] + r.bucket_drawn[static_cast<std::size_t>(b)];
        std::vector<index_t> taken(static_cast<std::size_t>(options.buckets), 0), picked(static_cast<std::size_t>(k));
        for (index_t i : order) {
            const auto b = static_cast<std::size_t>(bucket[static_cast<std::size_t>(i)]);
            if (taken[b] < r.bucket_drawn[b]) picked[static_cast<std::size_t>(start[b] + taken[b]++)] = i;
        }
        detail::write_indices(out, picked);
        return r;
    });
}

// ---------------------------------------------------------------------------------------------
// MMR1's sequential padding (validation and scoring passes over the whole dataset in full batches).

// n rounded up to a multiple of divisor (> 0).
inline index_t padded_length(index_t n, index_t divisor) {
    detail::require(divisor > 0, {"posttrain::sampling::padded_length", "divisor"}, "must be positive");
    detail::require(n >= 0, {"posttrain::sampling::padded_length", "n"}, "must be non-negative");
    return (n + divisor - 1) / divisor * divisor;
}

// pad_list: the list followed by copies of its last element up to a multiple of divisor (an empty
// list stays empty, as in MMR1's utils.pad_list).
template <class T>
std::vector<std::remove_const_t<T>> pad_list(std::span<T> list, index_t divisor) {
    std::vector<std::remove_const_t<T>> out(list.begin(), list.end());
    out.resize(static_cast<std::size_t>(padded_length(static_cast<index_t>(list.size()), divisor)),
               list.empty() ? std::remove_const_t<T>{} : list.back());
    return out;
}
template <class T>
std::vector<T> pad_list(const std::vector<T>& list, index_t divisor) {
    return pad_list(std::span<const T>(list), divisor);
}

// PaddedSequentialSampler: 0..N-1, then N-1 repeated up to a multiple of batch_size.
inline std::vector<index_t> padded_sequential_indices(index_t dataset_size, index_t batch_size) {
    detail::require(dataset_size >= 0, {"posttrain::sampling::padded_sequential_indices", "dataset_size"},
                    "must be non-negative");
    detail::require(batch_size > 0, {"posttrain::sampling::padded_sequential_indices", "batch_size"}, "must be positive");
    std::vector<index_t> seq(static_cast<std::size_t>(dataset_size));
    for (index_t i = 0; i < dataset_size; ++i) seq[static_cast<std::size_t>(i)] = i;
    return pad_list(seq, batch_size);
}

}  // namespace posttrain::sampling
