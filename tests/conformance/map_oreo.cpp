// Conformance mappings: OREO soft-Bellman losses.

#include "conformance.hpp"

namespace conformance {

void register_oreo(registry& r) {
    (void)r;
}

}  // namespace conformance
