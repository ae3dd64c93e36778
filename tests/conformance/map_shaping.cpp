// Conformance mappings for issue 8 (shaping) — placeholder until the mappings land.

#include "conformance.hpp"

namespace conformance {

void register_shaping(registry&) {}

}  // namespace conformance
