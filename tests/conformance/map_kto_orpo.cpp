// Conformance mappings: KTO, ORPO.

#include "conformance.hpp"

namespace conformance {

void register_kto_orpo(registry& r) {
    (void)r;
}

}  // namespace conformance
