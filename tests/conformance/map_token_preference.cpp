// Conformance mappings: Token-level preference: TGDPO, RTO rewards.

#include "conformance.hpp"

namespace conformance {

void register_token_preference(registry& r) {
    (void)r;
}

}  // namespace conformance
