// Conformance mappings: Pairwise DPO family (dpo_loss, DPOTrainer._compute_loss, cpo_loss, OpenRLHF DPOLoss/PairWiseLoss/LogExpLoss, SimPO).

#include "conformance.hpp"

namespace conformance {

void register_preference(registry& r) {
    (void)r;
}

}  // namespace conformance
