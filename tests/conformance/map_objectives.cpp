// Conformance mappings for issue 8 (objectives) — placeholder until the mappings land.

#include "conformance.hpp"

namespace conformance {

void register_objectives(registry&) {}

}  // namespace conformance
