#pragma once
// The CPU backend of model::engine: the fp32 reference every other backend
// is tested against.

#include <memory>

#include "kernels/model/engine.hpp"
#include "kernels/model/weights.hpp"

namespace kvflow::model {

/// An engine over host memory with f32 KV blocks and f32 hidden states. It
/// owns `w` (the projection matrices are repacked for the kernels and the
/// originals dropped) and a pool of `threads` threads (<= 0: one per
/// hardware thread). Every kernel fixes the order of each output element's
/// arithmetic by absolute positions, so chunked prefill at any chunk size,
/// layer splits and decode give bitwise the KV and logits of a one-shot
/// prefill. Throws kvflow::error(bad_file) when w's shapes do not match w.cfg.
/// With `held` narrower than the model, the engine keeps (and packs) only
/// those layers' weights, the embedding only when it runs layer 0 (or the
/// last layer of a model with tied embeddings) and the final norm and
/// output only with the last layer; its fingerprint stays the whole
/// model's, so chunk keys do not depend on the split. Throws
/// kvflow::error(invalid_argument) for an empty or out-of-model range.
std::unique_ptr<engine> make_cpu_engine(weights w, int threads = 0, layer_range held = {});

}  // namespace kvflow::model
