// Conformance mappings: MMR1 (LengSicong/MMR1 d8161a0) — placeholder; the mappings land with the
// sampling module.

#include "conformance.hpp"

namespace conformance {

void register_mmr1_samplers(registry&) {}

}  // namespace conformance
