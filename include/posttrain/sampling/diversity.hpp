#pragma once
// Trajectory diversity of each prompt's rollouts (the TDS term of MMR1's Variance Promotion Score),
// over token-id sequences:
//     distinct_n               unique n-grams / all n-grams, pooled over the prompt's sequences
//     self_bleu                mean sentence-BLEU of each sequence against the others (NLTK
//                              sentence_bleu, smoothing method1), a SIMILARITY
//     self_bleu_diversity      1 - self_bleu
//     pairwise_edit_distance   mean Levenshtein distance over pairs, normalised by the longer length
//                              (the report) or not (MMR1's code), optionally squared (report, App. A.3)
//
// Inputs: tokens[T] (any integer id type; ids are only compared for equality, so negative ids are
// fine), a layout of tokens into S sequences (ragged(offsets) with S + 1 CSR offsets, or
// uniform_groups{L} for right-padded [S, L] rows) and a layout of sequences into G prompts
// (uniform_groups{n}, ragged, or grouping::from_ids). Output: one value per prompt, out[G].
// See docs/algorithms/diversity.md.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "../advantage/common.hpp"
#include "../core/error.hpp"
#include "../core/exec.hpp"
#include "../core/groups.hpp"
#include "../core/numeric.hpp"
#include "../core/traits.hpp"
#include "../core/view.hpp"

namespace posttrain::sampling {

struct distinct_n_options {
    index_t n = 3;  // n-gram order, >= 1

    // MMR1's "distinct_3" curriculum metric.
    static constexpr distinct_n_options mmr1() { return {3}; }
};

struct self_bleu_options {
    int max_order = 3;                // n-gram orders 1..max_order, >= 1
    bool highest_order_only = false;  // weights (0, ..., 0, 1) instead of uniform 1/max_order
    double epsilon = 0.1;             // method1: a zero-match order counts epsilon / (hypothesis n-grams)

    // MMR1 calculate_self_bleu_123 (its "self_bleu_123" metric): uniform weights over orders 1..3.
    static constexpr self_bleu_options mmr1() { return {}; }
    // MMR1 calculate_self_bleu_n: only the n-th order is weighted.
    static constexpr self_bleu_options order_only(int n) { return {n, true, 0.1}; }
};

enum class edit_normalization {
    none,        // raw Levenshtein distance in tokens (MMR1's code)
    max_length,  // distance / max(|a|, |b|), in [0, 1]; two empty sequences are at distance 0 (report)
};

struct edit_distance_options {
    edit_normalization normalization = edit_normalization::max_length;
    bool squared = false;  // average d^2 (the report's App. A.3 estimator) instead of d

    // MMR1 calculate_pairwise_edit_distance: mean unnormalised distance over pairs i < j.
    static constexpr edit_distance_options mmr1() { return {edit_normalization::none, false}; }
    // MMR1 report, App. A.3: TDS = mean over pairs of d^2 with d the normalised edit distance.
    static constexpr edit_distance_options paper() { return {edit_normalization::max_length, true}; }
};

// What a diversity computation saw.
struct [[nodiscard]] diversity_result {
    index_t groups = 0;
    index_t small_groups = 0;     // prompts with fewer than two sequences (self-BLEU, edit distance: 0)
    index_t empty_sequences = 0;  // sequences without tokens
};

namespace detail {

using posttrain::detail::require;
using posttrain::detail::str;
using posttrain::detail::where;

// One sequence of a prompt: tokens p[0], p[stride], ... p[(len - 1) * stride].
template <class Id>
struct seq_ref {
    const Id* p;
    index_t stride;
    index_t len;
    Id operator[](index_t i) const noexcept { return p[i * stride]; }
};

// An n-gram occurrence: sequence k of the group (its index inside the group), start t.
struct window {
    index_t seq, start;
};

// Sorts the occurrences of n-grams of order n by content, then by sequence, so that equal n-grams
// are adjacent and, among them, each sequence's occurrences are adjacent.
template <class Id>
void sort_windows(std::vector<window>& w, const std::vector<seq_ref<Id>>& seqs, index_t n) {
    w.clear();
    for (index_t k = 0; k < index_t(seqs.size()); ++k)
        for (index_t t = 0; t + n <= seqs[std::size_t(k)].len; ++t) w.push_back({k, t});
    std::sort(w.begin(), w.end(), [&](const window& a, const window& b) {
        const auto& sa = seqs[std::size_t(a.seq)];
        const auto& sb = seqs[std::size_t(b.seq)];
        for (index_t i = 0; i < n; ++i) {
            const Id x = sa[a.start + i], y = sb[b.start + i];
            if (x != y) return x < y;
        }
        return a.seq < b.seq;
    });
}

template <class Id>
bool same_window(const std::vector<seq_ref<Id>>& seqs, const window& a, const window& b, index_t n) {
    const auto& sa = seqs[std::size_t(a.seq)];
    const auto& sb = seqs[std::size_t(b.seq)];
    for (index_t i = 0; i < n; ++i)
        if (sa[a.start + i] != sb[b.start + i]) return false;
    return true;
}

template <class Id>
double distinct_of(const std::vector<seq_ref<Id>>& seqs, index_t n, std::vector<window>& w) {
    sort_windows(w, seqs, n);
    if (w.empty()) return 0.0;
    index_t unique = 1;
    for (std::size_t i = 1; i < w.size(); ++i) unique += !same_window(seqs, w[i - 1], w[i], n);
    return double(unique) / double(w.size());  // Python's int / int: one correctly rounded division
}

// math.fsum: the exactly rounded sum of a few finite doubles (Shewchuk's partials, then Python's
// round-half-even correction), so that BLEU's log-sum has NLTK's bits.
inline double exact_sum(const double* x, int n) {
    double partials[64];
    int count = 0;
    for (int k = 0; k < n; ++k) {
        double v = x[k];
        int i = 0;
        for (int j = 0; j < count; ++j) {
            double y = partials[j];
            if (std::fabs(v) < std::fabs(y)) std::swap(v, y);
            const double hi = v + y;
            const double lo = y - (hi - v);
            if (lo != 0.0) partials[i++] = lo;
            v = hi;
        }
        partials[i] = v;
        count = i + 1;
    }
    if (count == 0) return 0.0;
    int m = count - 1;
    double hi = partials[m], lo = 0.0;
    while (m > 0) {
        const double a = hi, b = partials[--m];
        hi = a + b;
        lo = b - (hi - a);
        if (lo != 0.0) break;
    }
    if (m > 0 && ((lo < 0.0 && partials[m - 1] < 0.0) || (lo > 0.0 && partials[m - 1] > 0.0))) {
        const double b = lo * 2.0, a = hi + b;
        if (b == a - hi) hi = a;
    }
    return hi;
}

// Per-group scratch, reused across the groups of a block.
struct bleu_scratch {
    std::vector<window> w;
    std::vector<index_t> matches;  // [K, max_order] clipped n-gram matches
    std::vector<double> scores;
};

// NLTK 3.8 sentence_bleu(refs = the other sequences, hyp = sequence k) for every k of the group,
// averaged with np.mean. Requires K >= 2.
template <class Id>
double self_bleu_of(const std::vector<seq_ref<Id>>& seqs, const self_bleu_options& o, bleu_scratch& s) {
    const index_t K = index_t(seqs.size());
    const index_t orders = o.max_order;
    s.matches.assign(std::size_t(K * orders), 0);
    for (index_t n = 1; n <= orders; ++n) {
        sort_windows(s.w, seqs, n);
        // Each run of equal n-grams: count_k per sequence; the clip for sequence k is the largest count
        // among the OTHER sequences, i.e. the top count unless k holds it, then the second.
        std::size_t i = 0;
        while (i < s.w.size()) {
            std::size_t end = i + 1;
            while (end < s.w.size() && same_window(seqs, s.w[i], s.w[end], n)) ++end;
            index_t top = 0, second = 0, top_seq = -1;
            for (std::size_t a = i; a < end;) {
                std::size_t b = a + 1;
                while (b < end && s.w[b].seq == s.w[a].seq) ++b;
                const index_t c = index_t(b - a);
                if (c > top) {
                    second = top;
                    top = c;
                    top_seq = s.w[a].seq;
                } else if (c > second) {
                    second = c;
                }
                a = b;
            }
            for (std::size_t a = i; a < end;) {
                std::size_t b = a + 1;
                while (b < end && s.w[b].seq == s.w[a].seq) ++b;
                const index_t k = s.w[a].seq, c = index_t(b - a);
                const index_t clip = k == top_seq ? second : top;
                s.matches[std::size_t(k * orders + n - 1)] += c < clip ? c : clip;
                a = b;
            }
            i = end;
        }
    }
    s.scores.assign(std::size_t(K), 0.0);
    double terms[64];
    for (index_t k = 0; k < K; ++k) {
        const index_t h = seqs[std::size_t(k)].len;
        // NLTK returns 0 when no unigram matches, whatever the weights (this also covers h = 0).
        if (s.matches[std::size_t(k * orders)] == 0) continue;
        // Closest reference length: smallest |len - h|, ties to the shorter reference.
        index_t r = -1;
        for (index_t j = 0; j < K; ++j) {
            if (j == k) continue;
            const index_t len = seqs[std::size_t(j)].len;
            const index_t d = len > h ? len - h : h - len, best = r > h ? r - h : h - r;
            if (r < 0 || d < best || (d == best && len < r)) r = len;
        }
        const double bp = h > r ? 1.0 : std::exp(1.0 - double(r) / double(h));
        for (index_t n = 1; n <= orders; ++n) {
            const index_t num = s.matches[std::size_t(k * orders + n - 1)];
            const index_t den = h >= n ? h - n + 1 : 1;  // NLTK: max(1, hypothesis n-grams)
            const double p = num == 0 ? (0.0 + o.epsilon) / double(den) : double(num) / double(den);
            const double weight = o.highest_order_only ? (n == orders ? 1.0 : 0.0) : 1.0 / double(orders);
            terms[n - 1] = weight * std::log(p);
        }
        s.scores[std::size_t(k)] = bp * std::exp(exact_sum(terms, int(orders)));
    }
    return posttrain::detail::numpy_sum(s.scores.data(), K) / double(K);
}

// Scratch of the pairwise edit distance of one prompt: its tokens renumbered 0..sigma-1 (equal
// tokens, equal numbers), and for the bit-parallel distance the pattern's match masks, one row of
// `blocks` words per token number (dense, kept all-zero between pairs) while sigma x blocks stays
// under dense_limit, else (token, block, mask) entries sorted by token then block (O(m) memory
// whatever the alphabet); and the state of each 64-row block.
struct levenshtein_scratch {
    struct entry {
        index_t key;
        index_t block;
        std::uint64_t mask;
    };
    std::vector<window> w;               // the prompt's tokens sorted by value, for the renumbering
    std::vector<index_t> local;          // the prompt's tokens as numbers, sequence after sequence
    std::vector<index_t> start;          // sequence k is local[start[k] .. start[k + 1])
    std::vector<std::uint64_t> dense;    // dense masks: row k * blocks ..
    std::vector<entry> entries;          // sparse masks
    std::vector<index_t> first;          // sparse: entries of token k are [first[k], first[k + 1])
    std::vector<std::uint64_t> pv, mv;   // +1 / -1 vertical deltas per block
    std::vector<int> h;                  // the horizontal delta leaving each block at its latest column
    std::size_t dense_limit = std::size_t(1) << 20;  // the most words the dense table may take (tests lower it)
};

// One column step of a 64-row block of Myers' bit-vector algorithm (Hyyro's formulation for the
// edit distance): eq is the block's match mask for the text token, hin the horizontal delta entering
// at the block's top row (+1, 0, -1). Returns the horizontal delta leaving at row `out_bit`.
inline int advance_block(std::uint64_t& pv, std::uint64_t& mv, std::uint64_t eq, int hin, std::uint64_t out_bit) noexcept {
    const std::uint64_t hin_neg = hin < 0 ? 1u : 0u, hin_pos = hin > 0 ? 1u : 0u;
    const std::uint64_t xv = eq | mv;
    eq |= hin_neg;
    const std::uint64_t xh = (((eq & pv) + pv) ^ pv) | eq;
    std::uint64_t ph = mv | ~(xh | pv);
    std::uint64_t mh = pv & xh;
    const int hout = int((ph & out_bit) != 0) - int((mh & out_bit) != 0);  // branch-free: it is data dependent
    ph = (ph << 1) | hin_pos;
    mh = (mh << 1) | hin_neg;
    pv = mh | ~(xv | ph);
    mv = ph & xv;
    return hout;
}

// The bit-vector recurrence over the grid of (text column j, pattern block b) for a pattern of m
// tokens; mask(k, b) is block b of the match mask of token number k. Returns D[m][n].
template <class Mask>
index_t levenshtein_walk(levenshtein_scratch& s, index_t m, const index_t* text, index_t n, const Mask& mask) {
    const index_t blocks = (m + 63) / 64;
    s.pv.assign(std::size_t(blocks), ~std::uint64_t(0));  // D[i][0] = i: every vertical delta +1
    s.mv.assign(std::size_t(blocks), 0);
    s.h.assign(std::size_t(blocks), 0);
    std::uint64_t* pv = s.pv.data();
    std::uint64_t* mv = s.mv.data();
    int* h = s.h.data();
    const std::uint64_t high = std::uint64_t(1) << 63, last = std::uint64_t(1) << ((m - 1) % 64);
    index_t score = m;  // D[m][0]
    // Step (column j, block b) needs (j - 1, b) for the vertical deltas and (j, b - 1) for the
    // horizontal delta entering the block, so the steps of one anti-diagonal t = j + b are
    // independent: walking the grid by anti-diagonals lets the CPU overlap them, where column order
    // chains every block of a column behind the previous one. Blocks run downwards within a
    // diagonal so that h[b - 1] (block b - 1, column j) is read before this diagonal overwrites it.
    for (index_t t = 0; t + 1 < n + blocks; ++t) {
        const index_t b_hi = t < blocks - 1 ? t : blocks - 1, b_lo = t - (n - 1) > 0 ? t - (n - 1) : 0;
        for (index_t b = b_hi; b >= b_lo; --b) {
            const int hin = b == 0 ? 1 : h[b - 1];  // D[0][j] = j: the top row grows by one per column
            const int hout = advance_block(pv[b], mv[b], mask(text[t - b], b), hin, b + 1 == blocks ? last : high);
            h[b] = hout;
            if (b + 1 == blocks) score += hout;  // the delta of the last row, D[m][j + 1] - D[m][j]
        }
    }
    return score;
}

// Unit-cost Levenshtein distance of two renumbered sequences (numbers in [0, sigma)). The common
// prefix and suffix are stripped, then the shorter remainder (m tokens, ceil(m / 64) blocks) is the
// bit-vector pattern and the longer one is scanned once: O(n m / 64) word operations instead of the
// O(n m) dynamic programme.
inline index_t levenshtein(const index_t* a, index_t la, const index_t* b, index_t lb, index_t sigma,
                           levenshtein_scratch& s) {
    index_t lo = 0;
    while (lo < la && lo < lb && a[lo] == b[lo]) ++lo;
    while (la > lo && lb > lo && a[la - 1] == b[lb - 1]) --la, --lb;
    a += lo;
    b += lo;
    la -= lo;
    lb -= lo;
    if (la == 0) return lb;
    if (lb == 0) return la;
    if (la < lb) {  // the pattern is the shorter one
        std::swap(a, b);
        std::swap(la, lb);
    }
    const index_t* text = a;
    const index_t* pattern = b;
    const index_t n = la, m = lb, blocks = (m + 63) / 64;
    if (std::size_t(sigma) * std::size_t(blocks) <= s.dense_limit) {
        if (s.dense.size() < std::size_t(sigma * blocks)) s.dense.resize(std::size_t(sigma * blocks), 0);
        std::uint64_t* table = s.dense.data();
        for (index_t i = 0; i < m; ++i) table[pattern[i] * blocks + i / 64] |= std::uint64_t(1) << (i % 64);
        const index_t d = levenshtein_walk(s, m, text, n, [table, blocks](index_t k, index_t blk) { return table[k * blocks + blk]; });
        for (index_t i = 0; i < m; ++i) table[pattern[i] * blocks + i / 64] = 0;  // all-zero for the next pair
        return d;
    }
    s.entries.clear();
    for (index_t i = 0; i < m; ++i) s.entries.push_back({pattern[i], i / 64, std::uint64_t(1) << (i % 64)});
    std::sort(s.entries.begin(), s.entries.end(),
              [](const auto& x, const auto& y) { return x.key != y.key ? x.key < y.key : x.block < y.block; });
    std::size_t w = 0;  // merge the masks of one (token, block)
    for (std::size_t r = 0; r < s.entries.size(); ++r) {
        if (w > 0 && s.entries[w - 1].key == s.entries[r].key && s.entries[w - 1].block == s.entries[r].block)
            s.entries[w - 1].mask |= s.entries[r].mask;
        else
            s.entries[w++] = s.entries[r];
    }
    s.entries.resize(w);
    s.first.assign(std::size_t(sigma) + 1, index_t(w));
    for (std::size_t r = w; r-- > 0;) s.first[std::size_t(s.entries[r].key)] = index_t(r);
    for (index_t k = sigma; k-- > 0;)  // tokens absent from the pattern: an empty range
        if (s.first[std::size_t(k)] > s.first[std::size_t(k) + 1]) s.first[std::size_t(k)] = s.first[std::size_t(k) + 1];
    return levenshtein_walk(s, m, text, n, [&s](index_t k, index_t blk) -> std::uint64_t {
        const auto lo_e = s.entries.begin() + s.first[std::size_t(k)], hi_e = s.entries.begin() + s.first[std::size_t(k) + 1];
        const auto it = std::lower_bound(lo_e, hi_e, blk, [](const auto& x, index_t bb) { return x.block < bb; });
        return it != hi_e && it->block == blk ? it->mask : 0;
    });
}

// Numbers the prompt's tokens 0..sigma-1 by value (one sort per prompt, not one per pair).
template <class Id>
index_t renumber(const std::vector<seq_ref<Id>>& seqs, levenshtein_scratch& s) {
    s.start.assign(seqs.size() + 1, 0);
    for (std::size_t k = 0; k < seqs.size(); ++k) s.start[k + 1] = s.start[k] + seqs[k].len;
    s.local.resize(std::size_t(s.start.back()));
    sort_windows(s.w, seqs, 1);
    index_t sigma = 0;
    for (std::size_t i = 0; i < s.w.size(); ++i) {
        if (i > 0 && !same_window(seqs, s.w[i - 1], s.w[i], 1)) ++sigma;
        s.local[std::size_t(s.start[std::size_t(s.w[i].seq)] + s.w[i].start)] = sigma;
    }
    return s.w.empty() ? 0 : sigma + 1;
}

template <class Id>
double edit_distance_of(const std::vector<seq_ref<Id>>& seqs, const edit_distance_options& o, levenshtein_scratch& s,
                        std::vector<double>& pairs) {
    const index_t K = index_t(seqs.size());
    const index_t sigma = renumber(seqs, s);
    pairs.clear();
    for (index_t i = 0; i < K; ++i)
        for (index_t j = i + 1; j < K; ++j) {
            const index_t la = seqs[std::size_t(i)].len, lb = seqs[std::size_t(j)].len;
            double d = double(levenshtein(s.local.data() + s.start[std::size_t(i)], la,
                                          s.local.data() + s.start[std::size_t(j)], lb, sigma, s));
            if (o.normalization == edit_normalization::max_length) {
                const index_t longest = la > lb ? la : lb;
                d = longest > 0 ? d / double(longest) : 0.0;
            }
            pairs.push_back(o.squared ? d * d : d);
        }
    // Unnormalised distances are integers, so this sum is exact and equals np.mean's numerator.
    return posttrain::detail::fixed_order_sum(pairs.data(), index_t(pairs.size())) / double(pairs.size());
}

template <class L>
inline constexpr bool contiguous_layout = std::is_same_v<L, uniform_groups>;
template <class Offset>
inline constexpr bool contiguous_layout<ragged_groups<Offset>> = true;

// The shared driver: validates tokens, the sequence layout, the prompt layout and the output, then
// calls metric(seqs) -> double for every prompt (sequences in layout order) and writes out[g].
// Prompts with fewer than min_sequences sequences get 0 without calling the metric. `out` may not
// overlap `tokens`, nor the buffers of either layout: a prompt's result is written while later
// prompts' tokens and layouts are still to be read.
template <class Policy, class Tokens, class Sequences, class Groups, class Out, class Metric>
diversity_result diversity_entry(const Policy& policy, const Tokens& tokens, const Sequences& sequences,
                                 const Groups& groups, Out&& out, index_t min_sequences, const char* fn,
                                 Metric&& metric) {
    static_assert(host_policy<Policy>, "posttrain::sampling: this overload takes exec::seq or exec::par");
    static_assert(contiguous_layout<Sequences>,
                  "posttrain::sampling: sequences must be a contiguous layout of the tokens: ragged(offsets) or "
                  "uniform_groups{L}");
    auto tv = posttrain::detail::id_input<1>(tokens, {fn, "tokens"});
    auto ov = posttrain::detail::floating_output<1>(out, {fn, "out"});
    return std::visit(
        [&](auto t, auto y) {
            using Id = typename decltype(t)::value_type;
            using Y = typename decltype(y)::value_type;
            const index_t T = t.extent(0);
            const auto seq_layout = posttrain::detail::make_layout(sequences, T, {fn, "sequences"});
            const index_t S = seq_layout.num_groups();
            const auto layout = posttrain::detail::make_layout(groups, S, {fn, "groups"});
            const index_t G = layout.num_groups();
            posttrain::advantage::detail::check_extent(y.extent(0), G, {fn, "out"}, "one entry per prompt (group):");
            posttrain::advantage::detail::check_no_alias(y, t, {fn, "out"}, "tokens");
            // Both layouts are read while out is written.
            posttrain::detail::check_apart_from_layout(sequences, y, fn, "out");
            posttrain::detail::check_apart_from_layout(groups, y, fn, "out");
            using Raw = std::remove_const_t<Id>;
            const auto seq_of = [&](index_t s) {
                return seq_ref<Raw>{t.data() + seq_layout.rows(s).begin * t.stride(0), t.stride(0), seq_layout.size(s)};
            };
            const index_t cost = (G > 0 ? T / G : 0) * 8 + 1;
            posttrain::detail::for_blocks(policy, G, cost, [&](index_t lo, index_t hi) {
                auto local = metric;  // each block its own copy of the metric's scratch buffers
                std::vector<seq_ref<Raw>> seqs;
                for (index_t g = lo; g < hi; ++g) {
                    const auto rows = layout.rows(g);
                    const index_t n = layout.size(g);
                    seqs.clear();
                    for (index_t j = 0; j < n; ++j) seqs.push_back(seq_of(rows(j)));
                    y(g) = static_cast<Y>(n < min_sequences ? 0.0 : local(seqs));
                }
            });
            diversity_result res;
            res.groups = G;
            for (index_t g = 0; g < G; ++g) res.small_groups += layout.size(g) < 2;
            for (index_t s = 0; s < S; ++s) res.empty_sequences += seq_layout.size(s) == 0;
            return res;
        },
        tv, ov);
}

inline void check_bleu_options(const self_bleu_options& o, const char* fn) {
    require(o.max_order >= 1 && o.max_order <= 64, {fn, "options.max_order"},
            "must be in [1, 64], found " + std::to_string(o.max_order));
    require(numeric::is_finite(o.epsilon) && o.epsilon > 0, {fn, "options.epsilon"},
            "method1's epsilon must be finite and > 0, found " + std::to_string(o.epsilon));
}

}  // namespace detail

// distinct-n of each prompt: unique n-grams / all n-grams, pooled over its sequences (n-grams do not
// cross sequence boundaries). 0 when the prompt has no n-gram (no sequence of length >= n); a single
// sequence is scored normally. Higher = more diverse.
template <class Policy, class Tokens, class Sequences, class Groups, class Out>
diversity_result distinct_n(const Policy& policy, const Tokens& tokens, const Sequences& sequences, const Groups& groups,
                            Out&& out, const distinct_n_options& options = {}) {
    constexpr const char* fn = "posttrain::sampling::distinct_n";
    detail::require(options.n >= 1, {fn, "options.n"}, "must be >= 1, found " + detail::str(options.n));
    return detail::diversity_entry(policy, tokens, sequences, groups, std::forward<Out>(out), 0, fn,
                                   [&, w = std::vector<detail::window>()](const auto& seqs) mutable {
                                       return detail::distinct_of(seqs, options.n, w);
                                   });
}

// Self-BLEU of each prompt: the mean over its sequences of NLTK's sentence_bleu of the sequence
// against all the others (modified precision with clipping, brevity penalty against the closest
// reference length, method1 smoothing, exactly-rounded log-sum). A similarity in [0, 1]; 0 for
// prompts with fewer than two sequences.
template <class Policy, class Tokens, class Sequences, class Groups, class Out>
diversity_result self_bleu(const Policy& policy, const Tokens& tokens, const Sequences& sequences, const Groups& groups,
                           Out&& out, const self_bleu_options& options = {}) {
    constexpr const char* fn = "posttrain::sampling::self_bleu";
    detail::check_bleu_options(options, fn);
    return detail::diversity_entry(policy, tokens, sequences, groups, std::forward<Out>(out), 2, fn,
                                   [&, s = detail::bleu_scratch()](const auto& seqs) mutable {
                                       return detail::self_bleu_of(seqs, options, s);
                                   });
}

// 1 - self_bleu per prompt (a diversity, higher = more diverse); 0, not 1, for prompts with fewer
// than two sequences, as MMR1's code gives no diversity there.
template <class Policy, class Tokens, class Sequences, class Groups, class Out>
diversity_result self_bleu_diversity(const Policy& policy, const Tokens& tokens, const Sequences& sequences,
                                     const Groups& groups, Out&& out, const self_bleu_options& options = {}) {
    constexpr const char* fn = "posttrain::sampling::self_bleu_diversity";
    detail::check_bleu_options(options, fn);
    return detail::diversity_entry(policy, tokens, sequences, groups, std::forward<Out>(out), 2, fn,
                                   [&, s = detail::bleu_scratch()](const auto& seqs) mutable {
                                       return 1.0 - detail::self_bleu_of(seqs, options, s);
                                   });
}

// Mean pairwise edit distance of each prompt's sequences (over pairs i < j; unit-cost Levenshtein on
// token ids), normalised by the longer sequence's length or not, optionally squared. 0 for prompts
// with fewer than two sequences.
template <class Policy, class Tokens, class Sequences, class Groups, class Out>
diversity_result pairwise_edit_distance(const Policy& policy, const Tokens& tokens, const Sequences& sequences,
                                        const Groups& groups, Out&& out, const edit_distance_options& options = {}) {
    constexpr const char* fn = "posttrain::sampling::pairwise_edit_distance";
    return detail::diversity_entry(
        policy, tokens, sequences, groups, std::forward<Out>(out), 2, fn,
        [&, row = detail::levenshtein_scratch(), pairs = std::vector<double>()](const auto& seqs) mutable {
            return detail::edit_distance_of(seqs, options, row, pairs);
        });
}

}  // namespace posttrain::sampling
