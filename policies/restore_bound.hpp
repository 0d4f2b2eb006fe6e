#pragma once
// The lowest TTFT a batch-1 restore allows, from one run's own measured
// costs: each cell (chunk x layer) of the cached prefix is either computed
// on the GPU or loaded over the link, the uncached suffix is computed, and
// the two resources work at once. Pure: numbers in, a number out.

#include <cstdint>
#include <vector>

namespace kvflow::policies {

/// What the bound rests on.
struct bound_inputs {
  std::vector<double> chunk_compute_s;  ///< seconds to compute chunk c, all its layers, for every chunk [0, S)
  std::uint32_t cached = 0;             ///< P: chunks [0, P) may be loaded instead
  std::uint32_t layers = 0;             ///< L
  double cell_load_s = 0;               ///< seconds to move one cell over the link
};

/// The bound and the split that reaches it.
struct restore_bound {
  double ttft_s = 0;          ///< max(GPU busy, link busy) at the best split
  double computed_cells = 0;  ///< prefix cells computed at that split (chunk-major, fractional)
};

/// min over splits of max(suffix compute + compute of the first z prefix
/// cells, load of the other P*L - z cells + one layer row of the suffix
/// where any load: the suffix's top layer needs every chunk's top layer, so
/// it computes after the link's last cell). A chunk's cells cost the same
/// to load wherever they are while later chunks cost more to compute
/// (attention over a longer prefix), so computing a chunk-major head of the
/// prefix is an optimal split; beyond that row the bound ignores the order
/// the cells depend on each other in, grant latencies and the first
/// token's logits, so no schedule beats it. Throws kvflow::error(invalid_argument) when
/// chunk_compute_s is shorter than `cached`, a cost is negative or not
/// finite, or layers is 0.
restore_bound lowest_ttft(const bound_inputs& in);

/// The lowest TTFTs a batch arriving together allows on one GPU and one
/// shared link: per request, in input order, and their mean.
struct batch_bound {
  std::vector<double> ttft_s;  ///< per request of the input
  double mean_ttft_s = 0;
};

/// Requests ranked by lowest_ttft() alone; the k-th to finish cannot finish
/// before the k first of that ranking could all be restored together: the
/// best split of their pooled cells between GPU and link (cells whose
/// compute costs most per second of load go to the link), with every
/// suffix computed. Exact as a lower bound on each finishing position when
/// the requests' costs nest (one model and link: a shorter prompt's chunks
/// cost what a longer one's first chunks cost, so the k shortest are the k
/// quickest to restore together), as in `kvflow bench`'s batches; like
/// lowest_ttft it ignores dependencies and grant latencies. Every request's
/// cell_load_s is a cell's time on the one shared link. Throws like
/// lowest_ttft.
batch_bound lowest_batch_ttft(const std::vector<bound_inputs>& batch);

}  // namespace kvflow::policies
