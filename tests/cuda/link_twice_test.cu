// Every CUDA header once more, in a translation unit of its own: the other test files include them
// too, so a header that defines a non-inline, non-template symbol (a plain __global__ kernel, say)
// fails this binary's link instead of a user's.

#include <posttrain/advantage/gae.cuh>
#include <posttrain/advantage/gdpo.cuh>
#include <posttrain/advantage/gpg.cuh>
#include <posttrain/advantage/grpo.cuh>
#include <posttrain/advantage/opo.cuh>
#include <posttrain/advantage/passk.cuh>
#include <posttrain/advantage/reinforce_pp.cuh>
#include <posttrain/advantage/remax.cuh>
#include <posttrain/advantage/rloo.cuh>
#include <posttrain/advantage/whiten.cuh>
#include <posttrain/cuda/dtypes.cuh>
#include <posttrain/cuda/exec.cuh>
#include <posttrain/cuda/group_team.cuh>
#include <posttrain/cuda/grouping.cuh>
#include <posttrain/cuda/groups.cuh>
#include <posttrain/cuda/outcome.cuh>
#include <posttrain/cuda/tuning.cuh>
#include <posttrain/logits/token_log_probs.cuh>
#include <posttrain/policy_loss/aggregate.cuh>
#include <posttrain/policy_loss/entropy.cuh>
#include <posttrain/policy_loss/kl.cuh>
#include <posttrain/policy_loss/policy_loss.cuh>
#include <posttrain/policy_loss/value_loss.cuh>
#include <posttrain/preference/dpo.cuh>
#include <posttrain/preference/logits.cuh>
#include <posttrain/preference/sequence.cuh>
