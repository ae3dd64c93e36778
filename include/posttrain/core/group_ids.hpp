#pragma once
// The engine behind grouping::from_ids: rows grouped by integer id, groups in ascending id order
// (signed order for signed ids), rows in their original order inside a group. One thread; nothing
// depends on a thread count, so exec::seq and exec::par give the same bits.
//
// Every id is first mapped to an order-preserving 64-bit key; R is the range max - min of the keys,
// N the number of rows and G the number of distinct ids.
//   small range (R < max(N, 2^16)), e.g. dense ids: a table over the range counts the rows of each
//     key and then holds each key's group, so a row finds its group with one cache-resident load;
//     one pass over the rows then writes group_of and builds the permutation by a two-level stable
//     counting sort on the group (place_rows);
//   large range, e.g. hashed 64-bit ids: (key, row) pairs are partitioned by the top bits of the key
//     into <= 2^11 buckets, which are consecutive key ranges and so consecutive slices of the
//     permutation; each bucket is sorted in cache (MSD radix on the bits that still vary) straight
//     into its slice, giving the distinct ids and offsets on the way; group_of follows from the
//     permutation by the same two-level trick on rows (fill_group_of).
// The partitions write through per-bucket cache-line buffers with non-temporal stores
// (line_scatter): a direct scatter over 2^11 or 2^18 destinations misses the cache on nearly every
// store, which made those scatters the most expensive steps at 2^22 rows. The output vectors double
// as the N-sized scratch, since page faults on freshly allocated memory are a large part of the cost
// at that size; other scratch is cache-sized (or the size of the largest bucket).

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "view.hpp"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace posttrain::detail {

// Order-preserving map of an id to an unsigned key (the sign bit flipped for signed ids), and back.
template <class Id>
constexpr std::uint64_t group_key(Id v) noexcept {
    if constexpr (std::is_signed_v<Id>)
        return static_cast<std::uint64_t>(static_cast<std::int64_t>(v)) ^ (std::uint64_t{1} << 63);
    else
        return static_cast<std::uint64_t>(v);
}
template <class Id>
constexpr std::int64_t group_id_of_key(std::uint64_t key) noexcept {
    if constexpr (std::is_signed_v<Id>)
        return static_cast<std::int64_t>(key ^ (std::uint64_t{1} << 63));
    else
        return static_cast<std::int64_t>(key);
}

// Stable scatter of 64-bit values into the buckets of Ways parallel arrays (value w of a push goes
// to out[w]). Each bucket owns one cache line of buffer per array, aligned like the destination, and
// a buffer is written out once it holds a whole line: with ~2^11 buckets, storing straight into the
// destination touches a different line and page per store, while the buffers (128 KiB per array)
// stay in L2.
template <int Ways>
class line_scatter {
public:
    // Bucket b fills out[w][start[b] .. start[b + 1]).
    line_scatter(std::uint64_t* const (&out)[Ways], const std::vector<std::size_t>& start)
        : begin_(start.begin(), start.end() - 1),
          next_(begin_),
          storage_(new std::uint64_t[begin_.size() * Ways * per_line + per_line]) {
        for (int w = 0; w < Ways; ++w) {
            out_[w] = out[w];
            phase_[w] = (reinterpret_cast<std::uintptr_t>(out[w]) / sizeof(std::uint64_t)) % per_line;
        }
        // Align the buffers to a cache line so that each bucket's buffer is one line.
        const auto addr = reinterpret_cast<std::uintptr_t>(storage_.get());
        buffer_ = storage_.get() + (per_line - (addr / sizeof(std::uint64_t)) % per_line) % per_line;
    }

    void push(std::size_t bucket, const std::uint64_t (&values)[Ways]) noexcept {
        const std::size_t pos = next_[bucket]++;
        for (int w = 0; w < Ways; ++w) {
            const std::size_t slot = (pos + phase_[w]) % per_line;
            std::uint64_t* line = buffer_ + (bucket * Ways + std::size_t(w)) * per_line;
            line[slot] = values[w];
            if (slot == per_line - 1) {
                const std::size_t first = pos + 1 - per_line;
                if (pos + 1 >= per_line && first >= begin_[bucket])
                    store_line(out_[w] + first, line);
                else  // the bucket's first, partial line: the slots below its start belong to another bucket
                    copy_out(bucket, w, begin_[bucket], pos + 1);
            }
        }
    }

    // Writes the values still held in the buffers, and orders the non-temporal stores before any
    // later load of the destination.
    void finish() noexcept {
        for (std::size_t b = 0; b < begin_.size(); ++b)
            for (int w = 0; w < Ways; ++w) {
                const std::size_t end = next_[b], held = (end + phase_[w]) % per_line;
                copy_out(b, w, end - begin_[b] > held ? end - held : begin_[b], end);
            }
#if defined(__SSE2__)
        _mm_sfence();
#endif
    }

private:
    static constexpr std::size_t per_line = 64 / sizeof(std::uint64_t);

    // A whole, 64-byte aligned line of the destination. Non-temporal stores write it without first
    // reading it in: with 2^11 streams the hardware prefetchers cannot follow, an ordinary store
    // waits a full memory latency for the line to arrive, which made this loop several times slower
    // than a memcpy of the same bytes.
    static void store_line(std::uint64_t* dst, const std::uint64_t* src) noexcept {
#if defined(__SSE2__)
        auto* d = reinterpret_cast<__m128i*>(dst);
        const auto* s = reinterpret_cast<const __m128i*>(src);
        _mm_stream_si128(d, _mm_load_si128(s));
        _mm_stream_si128(d + 1, _mm_load_si128(s + 1));
        _mm_stream_si128(d + 2, _mm_load_si128(s + 2));
        _mm_stream_si128(d + 3, _mm_load_si128(s + 3));
#else
        std::memcpy(dst, src, 64);
#endif
    }

    void copy_out(std::size_t bucket, int w, std::size_t from, std::size_t to) noexcept {
        const std::uint64_t* line = buffer_ + (bucket * Ways + std::size_t(w)) * per_line;
        for (std::size_t p = from; p < to; ++p) out_[w][p] = line[(p + phase_[w]) % per_line];
    }

    std::uint64_t* out_[Ways];
    std::size_t phase_[Ways];  // position of out[w][0] inside its cache line, in elements
    std::vector<std::size_t> begin_, next_;
    std::unique_ptr<std::uint64_t[]> storage_;
    std::uint64_t* buffer_;
};

// Buckets of the row scatter hold 2^k consecutive groups, with at most 2^11 buckets: 2^11 line
// buffers fit in L2, and at 2^22 rows in 2^18 groups a bucket's slice of the permutation is 16 KiB.
inline constexpr int group_bucket_bits = 11;

// Writes group_of[i] = group(i) for every row i (visited in order, group(i) called once) and the
// permutation listing the rows of group 0, then group 1, ..., each in row order; offsets are the
// CSR offsets of the groups (G + 1 entries).
template <class GroupOf>
void place_rows(index_t n, index_t groups, const index_t* offsets, GroupOf&& group, index_t* group_of, index_t* perm) {
    if (n == 0) return;
    const int row_bits = std::bit_width(static_cast<std::uint64_t>(n - 1));
    const int group_bits = std::bit_width(static_cast<std::uint64_t>(groups - 1));
    const int low_bits = std::max(0, group_bits - group_bucket_bits);
    if (groups <= (index_t{1} << group_bucket_bits) || row_bits + low_bits > 64) {
        // Few groups: one stream of stores per group, which the hardware combines by itself.
        std::vector<index_t> next(offsets, offsets + groups);
        for (index_t i = 0; i < n; ++i) {
            const index_t g = group(i);
            group_of[i] = g;
            perm[next[static_cast<std::size_t>(g)]++] = i;
        }
        return;
    }
    // Level 1: (group within its bucket, row) packed in 64 bits goes to the bucket's slice of perm.
    const std::size_t buckets = static_cast<std::size_t>((groups - 1) >> low_bits) + 1;
    std::vector<std::size_t> start(buckets + 1);
    for (std::size_t b = 0; b < buckets; ++b) start[b] = static_cast<std::size_t>(offsets[b << low_bits]);
    start[buckets] = static_cast<std::size_t>(n);
    auto* packed = reinterpret_cast<std::uint64_t*>(perm);  // int64 storage, read as its unsigned variant
    {
        line_scatter<1> scatter({packed}, start);
        for (index_t i = 0; i < n; ++i) {
            const auto g = static_cast<std::uint64_t>(group(i));
            group_of[i] = static_cast<index_t>(g);
            const std::uint64_t low = g & ((std::uint64_t{1} << low_bits) - 1);
            scatter.push(static_cast<std::size_t>(g >> low_bits), {(low << row_bits) | static_cast<std::uint64_t>(i)});
        }
        scatter.finish();
    }
    // Level 2: each bucket's slice is copied out and its rows scattered to their final places in
    // the same slice, in the order level 1 left them (row order), so the result is stable.
    std::size_t largest = 0;
    for (std::size_t b = 0; b < buckets; ++b) largest = std::max(largest, start[b + 1] - start[b]);
    const std::unique_ptr<std::uint64_t[]> slice(new std::uint64_t[largest]);
    std::vector<index_t> next(std::size_t{1} << low_bits);
    const std::uint64_t row_mask = row_bits == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << row_bits) - 1;
    for (std::size_t b = 0; b < buckets; ++b) {
        const std::size_t lo = start[b], hi = start[b + 1];
        std::memcpy(slice.get(), packed + lo, (hi - lo) * sizeof(std::uint64_t));
        const std::size_t first = b << low_bits;
        const std::size_t count = std::min(std::size_t{1} << low_bits, static_cast<std::size_t>(groups) - first);
        std::copy(offsets + first, offsets + first + count, next.begin());
        for (std::size_t j = 0; j < hi - lo; ++j) {
            const std::uint64_t v = slice[j];
            perm[next[static_cast<std::size_t>(v >> row_bits)]++] = static_cast<index_t>(v & row_mask);
        }
    }
}

// Stable sort of (key, row) pairs in cache, reporting each distinct key once, in ascending order,
// with its rows in their original order: MSD radix on the bits that still vary, insertion sort for
// short runs. Used per bucket of the large-range path, where a bucket holds ~2^11 pairs and one radix
// level usually isolates each key.
class keyed_rows_sorter {
public:
    // emit(key, rows, count) for each distinct key. keys/rows: m pairs; kt/rt: m entries of scratch.
    template <class Emit>
    void run(std::uint64_t* keys, std::uint64_t* rows, std::uint64_t* kt, std::uint64_t* rt, std::size_t m,
             Emit& emit) {
        sort(keys, rows, kt, rt, m, 0, emit);
    }

private:
    static constexpr int max_digit_bits = 11;
    static constexpr std::size_t radix_max = std::size_t{1} << max_digit_bits;
    static constexpr std::size_t small_run = 16;

    template <class Emit>
    static void emit_runs(const std::uint64_t* k, const std::uint64_t* r, std::size_t m, Emit& emit) {
        for (std::size_t i = 0; i < m;) {
            std::size_t j = i + 1;
            while (j < m && k[j] == k[i]) ++j;
            emit(k[i], r + i, j - i);
            i = j;
        }
    }

    template <class Emit>
    void sort(std::uint64_t* k, std::uint64_t* r, std::uint64_t* kt, std::uint64_t* rt, std::size_t m,
              std::size_t depth, Emit& emit) {
        if (m == 0) return;  // an empty bucket
        std::uint64_t diff = 0;
        for (std::size_t i = 0; i < m; ++i) diff |= k[i] ^ k[0];
        if (diff == 0) {  // the common case below the first level: one id's rows, already in order
            emit(k[0], r, m);
            return;
        }
        if (m <= small_run) {
            // Insertion sort moving only past strictly greater keys, hence stable.
            for (std::size_t i = 1; i < m; ++i) {
                const std::uint64_t kv = k[i], rv = r[i];
                std::size_t j = i;
                for (; j > 0 && k[j - 1] > kv; --j) {
                    k[j] = k[j - 1];
                    r[j] = r[j - 1];
                }
                k[j] = kv;
                r[j] = rv;
            }
            emit_runs(k, r, m, emit);
            return;
        }
        // Bits [0, top) vary; sort by the highest d of them, d ~ log2(m) so the histogram is O(m).
        const int top = std::bit_width(diff);
        const int d = std::min({top, max_digit_bits, static_cast<int>(std::bit_width(m))});
        const int shift = top - d;
        const std::size_t radix = std::size_t{1} << d;
        if (counts_.size() <= depth) counts_.emplace_back(new std::size_t[radix_max + 1]);
        std::size_t* c = counts_[depth].get();
        std::fill(c, c + radix + 1, std::size_t{0});
        const std::uint64_t mask = radix - 1;
        for (std::size_t i = 0; i < m; ++i) ++c[((k[i] >> shift) & mask) + 1];
        for (std::size_t v = 0; v < radix; ++v) c[v + 1] += c[v];
        for (std::size_t i = 0; i < m; ++i) {
            const std::size_t to = c[(k[i] >> shift) & mask]++;
            kt[to] = k[i];
            rt[to] = r[i];
        }
        // c[v] is now the end of digit v's run; each run is sorted with the buffers swapped.
        std::size_t lo = 0;
        for (std::size_t v = 0; v < radix; ++v) {
            const std::size_t hi = c[v];
            if (hi > lo) sort(kt + lo, rt + lo, k + lo, r + lo, hi - lo, depth + 1, emit);
            lo = hi;
        }
    }

    // One histogram per recursion depth, allocated on first use; deeper levels never move them.
    std::vector<std::unique_ptr<std::size_t[]>> counts_;
};

// group_of from the permutation and offsets: group_of[permutation[j]] = the group of position j.
// Those stores land at random rows; instead (group, row) pairs are scattered to row buckets of
// 2^k rows (a cache-resident slice of group_of each) and then written from there.
inline void fill_group_of(index_t n, index_t groups, const index_t* offsets, const index_t* perm, index_t* group_of) {
    if (n == 0) return;
    const int row_bits = std::bit_width(static_cast<std::uint64_t>(n - 1));
    const int group_bits = std::bit_width(static_cast<std::uint64_t>(groups - 1));
    const int low_bits = std::max(0, row_bits - group_bucket_bits);
    if (low_bits == 0 || low_bits + group_bits > 64) {
        for (index_t g = 0; g < groups; ++g)
            for (index_t j = offsets[g]; j < offsets[g + 1]; ++j) group_of[perm[j]] = g;
        return;
    }
    const std::size_t buckets = static_cast<std::size_t>((n - 1) >> low_bits) + 1;
    std::vector<std::size_t> start(buckets + 1);
    for (std::size_t b = 0; b < buckets; ++b) start[b] = b << low_bits;
    start[buckets] = static_cast<std::size_t>(n);
    auto* packed = reinterpret_cast<std::uint64_t*>(group_of);  // int64 storage, read as its unsigned variant
    const std::uint64_t low_mask = (std::uint64_t{1} << low_bits) - 1;
    {
        line_scatter<1> scatter({packed}, start);
        for (index_t g = 0; g < groups; ++g)
            for (index_t j = offsets[g]; j < offsets[g + 1]; ++j) {
                const auto row = static_cast<std::uint64_t>(perm[j]);
                scatter.push(static_cast<std::size_t>(row >> low_bits),
                             {(static_cast<std::uint64_t>(g) << low_bits) | (row & low_mask)});
            }
        scatter.finish();
    }
    const std::unique_ptr<std::uint64_t[]> slice(new std::uint64_t[std::size_t{1} << low_bits]);
    for (std::size_t b = 0; b < buckets; ++b) {
        const std::size_t lo = start[b], hi = start[b + 1];
        std::memcpy(slice.get(), packed + lo, (hi - lo) * sizeof(std::uint64_t));
        for (std::size_t j = 0; j < hi - lo; ++j)
            group_of[lo + (slice[j] & low_mask)] = static_cast<index_t>(slice[j] >> low_bits);
    }
}

// Small key range: a table over [min, max] counts rows per key, then maps each key to its group.
// Idx (32 or 64 bits) holds row counts and group numbers, so 32 bits keep the table small.
template <class Idx, class Id>
void group_ids_small_range(tensor_view<const Id, 1> ids, std::uint64_t kmin, std::uint64_t range,
                           std::vector<index_t>& perm, std::vector<index_t>& offsets,
                           std::vector<std::int64_t>& out_ids, std::vector<index_t>& group_of) {
    const index_t n = ids.extent(0);
    const std::size_t size = static_cast<std::size_t>(range) + 1;
    const std::unique_ptr<Idx[]> table(new Idx[size]());
    index_t groups = 0;
    for (index_t i = 0; i < n; ++i) groups += table[group_key(ids(i)) - kmin]++ == 0;
    out_ids.resize(static_cast<std::size_t>(groups));
    offsets.resize(static_cast<std::size_t>(groups) + 1);
    index_t g = 0, pos = 0;
    for (std::size_t v = 0; v < size; ++v) {
        const Idx count = table[v];
        if (count == 0) continue;
        out_ids[static_cast<std::size_t>(g)] = group_id_of_key<Id>(kmin + v);
        offsets[static_cast<std::size_t>(g)] = pos;
        pos += static_cast<index_t>(count);
        table[v] = static_cast<Idx>(g++);
    }
    offsets[static_cast<std::size_t>(groups)] = n;
    place_rows(
        n, groups, offsets.data(), [&](index_t i) { return static_cast<index_t>(table[group_key(ids(i)) - kmin]); },
        group_of.data(), perm.data());
}

// Large key range: (key, row) pairs are partitioned by the top bits of the key into buckets, which
// are consecutive key ranges and hence consecutive slices of the permutation; each bucket is sorted
// in cache and written to its slice, which also yields the distinct ids and offsets. group_of follows
// from the permutation.
template <class Id>
void group_ids_large_range(tensor_view<const Id, 1> ids, std::uint64_t kmin, std::uint64_t range,
                           std::vector<index_t>& perm, std::vector<index_t>& offsets,
                           std::vector<std::int64_t>& out_ids, std::vector<index_t>& group_of) {
    const index_t n = ids.extent(0);
    const int range_bits = std::bit_width(range);
    // ~2^10 pairs per bucket, at most 2^11 buckets: a bucket and its scratch stay in L1/L2.
    const int bucket_bits = std::clamp(static_cast<int>(std::bit_width(static_cast<std::uint64_t>(n))) - 10, 1, 11);
    const int shift = std::max(0, range_bits - bucket_bits);
    const std::size_t buckets = static_cast<std::size_t>(range >> shift) + 1;
    std::vector<std::size_t> start(buckets + 1, 0);
    for (index_t i = 0; i < n; ++i) ++start[static_cast<std::size_t>((group_key(ids(i)) - kmin) >> shift) + 1];
    for (std::size_t b = 0; b < buckets; ++b) start[b + 1] += start[b];
    // The output vectors are the scratch: keys in group_of, rows in perm, until they are written.
    auto* keys = reinterpret_cast<std::uint64_t*>(group_of.data());
    auto* rows = reinterpret_cast<std::uint64_t*>(perm.data());
    {
        line_scatter<2> scatter({keys, rows}, start);
        for (index_t i = 0; i < n; ++i) {
            const std::uint64_t u = group_key(ids(i)) - kmin;
            scatter.push(static_cast<std::size_t>(u >> shift), {u, static_cast<std::uint64_t>(i)});
        }
        scatter.finish();
    }

    std::size_t largest = 0;
    for (std::size_t b = 0; b < buckets; ++b) largest = std::max(largest, start[b + 1] - start[b]);
    const std::unique_ptr<std::uint64_t[]> local(new std::uint64_t[4 * largest]);
    std::uint64_t *lk = local.get(), *lr = lk + largest, *tk = lr + largest, *tr = tk + largest;
    offsets.assign(1, 0);
    out_ids.clear();
    std::size_t out = 0;  // next position of the permutation
    auto emit = [&](std::uint64_t u, const std::uint64_t* r, std::size_t count) {
        out_ids.push_back(group_id_of_key<Id>(u + kmin));
        for (std::size_t j = 0; j < count; ++j) perm[out + j] = static_cast<index_t>(r[j]);
        out += count;
        offsets.push_back(static_cast<index_t>(out));
    };
    keyed_rows_sorter sorter;
    for (std::size_t b = 0; b < buckets; ++b) {
        // Copied out first: the sorted rows overwrite this bucket's slice of perm.
        const std::size_t lo = start[b], m = start[b + 1] - lo;
        std::memcpy(lk, keys + lo, m * sizeof(std::uint64_t));
        std::memcpy(lr, rows + lo, m * sizeof(std::uint64_t));
        sorter.run(lk, lr, tk, tr, m, emit);
    }
    fill_group_of(n, static_cast<index_t>(out_ids.size()), offsets.data(), perm.data(), group_of.data());
}

template <class Idx, class Id>
void group_ids_with(tensor_view<const Id, 1> ids, std::vector<index_t>& perm, std::vector<index_t>& offsets,
                    std::vector<std::int64_t>& out_ids, std::vector<index_t>& group_of) {
    const index_t n = ids.extent(0);
    // Four independent min/max chains, so that the loop runs at load speed.
    std::uint64_t lo[4] = {~std::uint64_t{0}, ~std::uint64_t{0}, ~std::uint64_t{0}, ~std::uint64_t{0}}, hi[4] = {};
    index_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int l = 0; l < 4; ++l) {
            const std::uint64_t k = group_key(ids(i + l));
            lo[l] = std::min(lo[l], k);
            hi[l] = std::max(hi[l], k);
        }
    for (; i < n; ++i) {
        const std::uint64_t k = group_key(ids(i));
        lo[0] = std::min(lo[0], k);
        hi[0] = std::max(hi[0], k);
    }
    const std::uint64_t kmin = std::min({lo[0], lo[1], lo[2], lo[3]}), kmax = std::max({hi[0], hi[1], hi[2], hi[3]});
    const std::uint64_t range = kmax - kmin;
    // A table of up to max(N, 2^16) entries costs at most half of group_of's memory and, for ids of
    // groups of several rows, stays in cache; wider ranges take the partitioning path.
    const std::uint64_t table_limit = std::max<std::uint64_t>(static_cast<std::uint64_t>(n), std::uint64_t{1} << 16);
    if (range < table_limit)
        group_ids_small_range<Idx>(ids, kmin, range, perm, offsets, out_ids, group_of);
    else
        group_ids_large_range(ids, kmin, range, perm, offsets, out_ids, group_of);
}

// Fills a grouping: perm (N), offsets (G + 1), ids (G, ascending), group_of (N). Deterministic; does
// not depend on any thread count.
template <class Id>
void group_ids(tensor_view<const Id, 1> ids, std::vector<index_t>& perm, std::vector<index_t>& offsets,
               std::vector<std::int64_t>& out_ids, std::vector<index_t>& group_of) {
    const index_t n = ids.extent(0);
    perm.assign(static_cast<std::size_t>(n), 0);
    group_of.assign(static_cast<std::size_t>(n), 0);
    out_ids.clear();
    offsets.assign(1, 0);
    if (n == 0) return;
    if (static_cast<std::uint64_t>(n) <= std::numeric_limits<std::uint32_t>::max())
        group_ids_with<std::uint32_t>(ids, perm, offsets, out_ids, group_of);
    else
        group_ids_with<std::uint64_t>(ids, perm, offsets, out_ids, group_of);
}

}  // namespace posttrain::detail
