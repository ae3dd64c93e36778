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

}  // namespace posttrain
