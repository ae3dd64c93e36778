#pragma once
// Seeded pseudo-randomness for the algorithms whose references draw random numbers (torch.randperm,
// random tournament seeds): a documented generator, so that a seed gives the same draw on every
// platform, compiler and execution policy.

#include <cstdint>

#include "../config.hpp"

namespace posttrain {

// SplitMix64 (Steele, Lea, Flood 2014): a 64-bit state advanced by the golden-ratio increment and
// finalised by two xor-shift-multiply rounds. Small, fast, and good enough for sampling subsets.
class splitmix64 {
public:
    POSTTRAIN_HD explicit constexpr splitmix64(std::uint64_t seed) noexcept : state_(seed) {}

    POSTTRAIN_HD constexpr std::uint64_t next() noexcept {
        std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }

    // Uniform in [0, n) for n > 0 (modulo reduction: the bias, below n / 2^64, is irrelevant here).
    POSTTRAIN_HD constexpr std::uint64_t below(std::uint64_t n) noexcept { return next() % n; }

private:
    std::uint64_t state_;
};

// Philox4x32-10 (Salmon, Moraes, Dror, Shaw 2011, "Parallel random numbers: as easy as 1, 2, 3";
// the Random123 reference). Counter-based: the 128-bit output is a pure function of (key, counter),
// so draw number d of a sampler is computed directly from d, never by advancing a state. That is
// what lets a host loop, an OpenMP split, a Thrust transform and a CUDA thread produce the same
// numbers for the same (seed, stream, index), whatever order they run in.
//
// Counter layout used by posttrain: {lo(index), hi(index), lo(stream), hi(stream)}; key {lo(seed),
// hi(seed)}. A stream separates independent uses of one seed (an epoch, a regeneration, a purpose).
struct philox_block {
    std::uint32_t v[4];
};

class philox4x32_10 {
public:
    POSTTRAIN_HD explicit constexpr philox4x32_10(std::uint64_t seed) noexcept
        : k0_(static_cast<std::uint32_t>(seed)), k1_(static_cast<std::uint32_t>(seed >> 32)) {}

    // The raw bijection of one 128-bit counter under this key (ten rounds).
    POSTTRAIN_HD constexpr philox_block operator()(philox_block ctr) const noexcept {
        std::uint32_t k0 = k0_, k1 = k1_;
        for (int r = 0; r < 10; ++r) {
            if (r > 0) {
                k0 += 0x9E3779B9u;  // Weyl key schedule: golden ratio and sqrt(3) - 1
                k1 += 0xBB67AE85u;
            }
            const std::uint64_t p0 = std::uint64_t{0xD2511F53u} * ctr.v[0];
            const std::uint64_t p1 = std::uint64_t{0xCD9E8D57u} * ctr.v[2];
            const std::uint32_t hi0 = static_cast<std::uint32_t>(p0 >> 32), lo0 = static_cast<std::uint32_t>(p0);
            const std::uint32_t hi1 = static_cast<std::uint32_t>(p1 >> 32), lo1 = static_cast<std::uint32_t>(p1);
            ctr = philox_block{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
        }
        return ctr;
    }

    // The block for draw `index` of `stream`.
    POSTTRAIN_HD constexpr philox_block block(std::uint64_t stream, std::uint64_t index) const noexcept {
        return (*this)(philox_block{{static_cast<std::uint32_t>(index), static_cast<std::uint32_t>(index >> 32),
                                     static_cast<std::uint32_t>(stream), static_cast<std::uint32_t>(stream >> 32)}});
    }

private:
    std::uint32_t k0_, k1_;
};

// Uniform doubles from Philox words. A 64-bit word (hi << 32 | lo) keeps its top 53 bits, m, so every
// value is an exact multiple of 2^-53 and no rounding happens anywhere (same bits on every device):
//   unit_closed_open(hi, lo) = m * 2^-53        in [0, 1)
//   unit_open_closed(hi, lo) = (m + 1) * 2^-53  in (0, 1]   (safe under log: never 0)
POSTTRAIN_HD constexpr std::uint64_t philox_word64(std::uint32_t hi, std::uint32_t lo) noexcept {
    return (std::uint64_t{hi} << 32) | lo;
}
POSTTRAIN_HD constexpr double unit_closed_open(std::uint64_t bits) noexcept {
    return static_cast<double>(bits >> 11) * 0x1.0p-53;
}
POSTTRAIN_HD constexpr double unit_open_closed(std::uint64_t bits) noexcept {
    return static_cast<double>((bits >> 11) + 1) * 0x1.0p-53;
}

}  // namespace posttrain
