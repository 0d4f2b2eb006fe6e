#pragma once
// What restore work costs: per-cell compute time by chunk position and
// per-tier bandwidth and per-grant latency, from a prior until measured
// completions arrive.

#include <array>
#include <cstdint>
#include <map>

#include "messages/types.hpp"

namespace kvflow::policies {

/// Starting values of the cost model. The defaults are llama-3-8b on an H100
/// with 512-token chunks, as measured when the design was laid out: a chunk
/// computes in 37 ms at position 0 and 78 ms at chunk 63 (attention grows
/// with position), over 32 layers; host 55 GB/s, disk 1.5 GB/s, remote 10
/// Gbit/s. The model learns the real rates from samples as requests run.
struct cost_prior {
  double cell_s = 37e-3 / 32;                                                   ///< one cell (chunk x layer) at chunk 0
  double cell_slope_s = (78e-3 - 37e-3) / 32 / 63;                              ///< added per chunk of position
  std::array<double, msg::tier_count> bytes_per_s{400e9, 55e9, 1.5e9, 1.25e9};  ///< by msg::tier
  /// Fixed seconds of one load grant by msg::tier until samples of several
  /// sizes tell it apart from the bandwidth (samples of one size keep it
  /// here). 0: none.
  std::array<double, msg::tier_count> latency_s{};
  double rate_alpha = 0.3;  ///< weight of a new load sample (old ones decay by 1 - it)
  /// Link seconds of consecutive load samples of one size that a tier pools
  /// into one before it fits (their mean, weighted by their count, decaying
  /// older ones as one sample does): a pipelined link's grants complete in
  /// bursts (a disk read of several layers lands, then its layers are
  /// answered one by one), so one grant's time swings around the link's
  /// mean. 0: every sample alone.
  double rate_pool_s = 8e-3;
  double compute_forget = 0.98;  ///< per-sample decay of old compute samples
};

/// Compute cost of cell (c, l) = a + b*c seconds (attention grows with the
/// tokens before the chunk), fitted online by decayed least squares with a
/// ridge toward the prior. A load grant of a tier takes latency + bytes /
/// bandwidth: the first sample sets the bandwidth (beside the prior's
/// latency), later ones refit both by decayed least squares over the
/// grants' sizes (a link that only ever sees one size keeps its latency
/// near the prior's and follows the rate), each run of samples of one size
/// pooled over cost_prior::rate_pool_s.
/// Not thread-safe; owned by the scheduler.
class cost_model {
 public:
  explicit cost_model(cost_prior prior = {});

  /// A model that never learns: fixed per-cell line and bandwidths (the oracle's).
  static cost_model fixed(double cell_s, double cell_slope_s, const std::array<double, msg::tier_count>& bytes_per_s,
                          const std::array<double, msg::tier_count>& latency_s = {});

  /// Seconds to compute one cell of chunk `chunk`.
  double cell_s(std::uint32_t chunk) const { return a_ + b_ * chunk; }
  /// Seconds to compute a rectangle of cells.
  double compute_s(const msg::cell_range& cells) const;
  /// Seconds to compute chunks [begin, end), `layers` layers each.
  double compute_s(std::uint32_t begin, std::uint32_t end, std::uint32_t layers) const;
  /// Bytes per second of a tier's link.
  double bytes_per_s(msg::tier t) const { return rate_[static_cast<std::size_t>(t)]; }
  /// Bytes per second of one link of a tier (msg::chunk_location::link: a
  /// remote tier's node), as learned from that link's own samples; the
  /// tier's rate until it has one (and for link 0).
  double bytes_per_s(msg::tier t, std::uint16_t link) const;
  /// Transfer seconds of `bytes` over a tier's link (latency not included).
  double load_s(msg::tier t, double bytes) const { return bytes / bytes_per_s(t); }
  double load_s(msg::tier t, std::uint16_t link, double bytes) const { return bytes / bytes_per_s(t, link); }
  /// Fixed seconds of one load grant of a tier, beyond its bytes' transfer
  /// (an O_DIRECT read's or a request's round trip).
  double latency_s(msg::tier t) const { return latency_[static_cast<std::size_t>(t)]; }
  double latency_s(msg::tier t, std::uint16_t link) const;
  /// What the tier's links move together: the sum of its learned links'
  /// rates (nodes on links of their own), 0 while none has a sample.
  double links_bytes_per_s(msg::tier t) const;

  /// Learns from a finished compute grant of two cells or more, except the
  /// first one ever (one-time setup). Loads are ignored here: their rate
  /// comes as a rate_sample, see batch_state::apply(cell_done).
  void observe(const msg::cell_done& done);
  /// Learns from `bytes` moved in `elapsed_ns`: the tier's latency and rate
  /// from one grant (sample.link 0; pooled with the grants of the same size
  /// before it, see cost_prior::rate_pool_s), or one link's rate alone
  /// (decayed bytes over decayed seconds, no latency: its samples span
  /// pipelined grants).
  /// At most max_links links per model are learned; others are ignored.
  void observe(const msg::rate_sample& sample);
  /// Learns a compute grant's trip beyond GPU work, on the scheduler's and
  /// the GPU's clock (the same steady clock): `to_gpu_s` from its sending to
  /// the GPU starting it, learned only when `gpu_was_idle` (the GPU had
  /// finished every earlier grant, so it waited for this one: the actors'
  /// messages, a decode step of other requests run first; else the time
  /// includes queueing behind earlier grants), and `from_gpu_s` from the GPU
  /// finishing it to the scheduler hearing. Compute in flight must cover
  /// both, or the GPU idles between grants. Decayed means (rate_alpha); the
  /// first sample (one-time setup) and times outside [0, 1] s (a clock of
  /// another machine) are ignored.
  void observe_compute_trip(double to_gpu_s, bool gpu_was_idle, double from_gpu_s);
  /// Seconds of a compute grant's trip beyond GPU work; 0 until learned.
  double compute_trip_s() const { return to_gpu_s_ + from_gpu_s_; }

  std::uint64_t compute_samples() const { return compute_samples_; }
  /// Samples of the tier as a whole (link 0) plus those of its links.
  std::uint64_t rate_samples(msg::tier t) const;
  std::uint64_t rate_samples(msg::tier t, std::uint16_t link) const;

  static constexpr std::size_t max_links = 1024;

 private:
  // Decayed sums of one link's per-grant regression seconds = latency + bytes / rate.
  struct link_sums {
    double s0 = 0, sx = 0, sxx = 0, sy = 0, sxy = 0;
  };
  // One link of a tier, learned from its own samples.
  struct link_fit {
    double rate = 0, latency = 0;
    link_sums sums;
    std::uint64_t samples = 0;
  };
  void refit();
  // Adds `weight` samples (x, y) to `sums` and refits rate and latency (the
  // `first` sample sets the rate alone beside `latency0`, the latency samples
  // of one size keep).
  void fit_link(link_sums& sums, bool first, double& rate, double& latency, double latency0, double x, double y,
                double weight) const;
  // Samples of one size waiting to be fitted as one (link 0 of a tier).
  struct sample_pool {
    double bytes = 0, seconds = 0;
    std::uint64_t count = 0;
  };
  void flush_pool(std::size_t tier);

  cost_prior prior_;
  bool frozen_ = false;
  double a_, b_;
  std::array<double, msg::tier_count> rate_;
  // Decayed sums of the weighted per-cell regression y = a + b*x.
  double sw_ = 0, sx_ = 0, sxx_ = 0, sy_ = 0, sxy_ = 0;
  std::uint64_t compute_samples_ = 0;
  bool seen_first_compute_ = false;
  std::array<std::uint64_t, msg::tier_count> rate_samples_{};
  double to_gpu_s_ = 0, from_gpu_s_ = 0;
  std::uint64_t to_gpu_samples_ = 0, from_gpu_samples_ = 0;
  std::array<double, msg::tier_count> latency_{};
  std::array<link_sums, msg::tier_count> links_{};
  std::array<sample_pool, msg::tier_count> pools_{};
  std::map<std::pair<msg::tier, std::uint16_t>, link_fit> per_link_;  ///< link != 0
};

}  // namespace kvflow::policies
