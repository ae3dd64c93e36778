// Conformance mappings: Beyond pairs: MODPO, D3PO.

#include "conformance.hpp"

namespace conformance {

void register_listwise(registry& r) {
    (void)r;
}

}  // namespace conformance
