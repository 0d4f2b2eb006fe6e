#pragma once
// Bulk KV bytes between processes over UCX (ucp tag API): TCP between
// machines or network namespaces, shared memory between processes of one
// host, RDMA where the fabric has it. Control messages travel through CAF;
// this carries only the bytes they announce.
//
// A transport is several lanes: one UCX worker and one progress thread
// each, so one peer pair holds several TCP connections. A transfer travels
// as pieces of an agreed size spread over the lanes; each piece is hashed on
// its lane's thread as it leaves and as it lands, so neither side spends an
// actor's time on copies or checksums.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace kvflow::devices::net {

/// XXH3-64 of contiguous bytes.
std::uint64_t checksum(const void* data, std::size_t bytes);
/// A transfer's checksum as carried by its announcing message: XXH3-64 over
/// the XXH3-64 of each piece of `piece_bytes` (the last may be shorter), in
/// order. What transport::send computes as the pieces leave and a receiver
/// as they land.
std::uint64_t checksum(const void* data, std::size_t bytes, std::size_t piece_bytes);
/// The piece size both ends use for transfers of whole spans of `span_bytes`
/// (one chunk's layer range): the span itself, or its largest divisor of at
/// most 8 MiB, so that pieces never straddle two spans and a large transfer
/// spreads over every lane.
std::size_t piece_bytes_for(std::size_t span_bytes);

/// Transfer ids fit in this many bits (the rest of a UCX tag numbers pieces).
constexpr int transfer_id_bits = 44;
/// A transfer has at most this many pieces.
constexpr std::uint64_t max_pieces = 1ull << (64 - transfer_id_bits);

struct transport_options {
  /// UCX transports (UCX_TLS syntax: "tcp", "tcp,self", "sm,tcp"); empty:
  /// UCX's choice (shared memory between processes of one host).
  std::string tls;
  /// Network devices (UCX_NET_DEVICES syntax: "lo", "veth0"); empty: all.
  std::string devices;
  /// UCX workers, each with a thread and its own connection to each peer:
  /// one TCP stream through UCX reached about half of a 25 Gbit/s link.
  std::size_t lanes = 4;
  /// Threads that decode compressed pieces (expect(..., compressed = true))
  /// off the lanes' threads; 0: min(8, cores / 2), at least 2. At 25
  /// Gbit/s the KV frames of wire_codec need about three.
  std::size_t decode_threads = 0;
};

/// What became of one announced transfer.
struct landed {
  bool ok = false;
  std::string why;                ///< why not, when !ok
  std::uint64_t bytes = 0;        ///< bytes received
  std::uint64_t finished_ns = 0;  ///< steady clock, when the last byte landed
  std::uint64_t first_ns = 0;     ///< steady clock, when the first piece began landing (0: none did)
  std::uint64_t checksum = 0;     ///< of the bytes landed, as checksum(data, bytes, piece_bytes)
  std::uint64_t wire_bytes = 0;   ///< bytes that crossed the wire (less than `bytes` where compressed)
};

/// What became of one send.
struct sent {
  bool ok = false;
  std::string why;             ///< why not, when !ok
  std::uint64_t checksum = 0;  ///< of the bytes sent, as checksum(data, bytes, piece_bytes)
};

/// Contiguous source bytes of a send.
struct region {
  const void* data = nullptr;
  std::size_t bytes = 0;
};

/// One piece of a send_pieces() transfer: raw bytes (hashed as they leave)
/// or a wire_codec frame of a piece (smaller than the piece) with the
/// XXH3-64 of the raw piece it decodes to, known from when it was made.
struct outgoing_piece {
  const void* data = nullptr;
  std::size_t bytes = 0;
  bool frame = false;
  std::uint64_t raw_checksum = 0;  ///< frames only
};

/// Bytes landed by a transport's announced transfers since it started.
struct landed_totals {
  std::uint64_t raw_bytes = 0;   ///< as announced (decoded)
  std::uint64_t wire_bytes = 0;  ///< as they crossed the wire
  std::uint64_t frames = 0;      ///< compressed pieces decoded
};

/// Lanes of UCX workers and their progress threads. Every UCX call runs on
/// a lane's thread: the public calls queue work and return at once, and
/// callbacks run on a lane's thread (keep them short: post a message,
/// return). A receiver lands only transfers it announced with expect(): a
/// piece with an unknown id, of another size than announced, or twice, is
/// read into a scratch buffer and dropped (counted by refused()).
/// Thread-safe.
class transport {
 public:
  /// Throws kvflow::error(io_failure) when UCX cannot start a worker,
  /// invalid_argument for bad options.
  explicit transport(const transport_options& options = {});
  /// Stops the threads; pending transfers are answered as failed.
  ~transport();
  transport(const transport&) = delete;
  transport& operator=(const transport&) = delete;

  /// This transport's address (every lane's worker): what a peer passes to
  /// send() to reach it.
  const std::vector<std::uint8_t>& address() const { return address_; }
  std::size_t lanes() const;

  /// Announces transfer `id` (below 2^transfer_id_bits) of exactly `bytes`
  /// bytes in pieces of `piece_bytes` (0: one piece), to land in `dst`,
  /// which must stay valid until `done` runs or cancel() returns true.
  /// `done` runs once, on a lane's or a decoding thread, after every piece
  /// that started landing has finished. With `compressed`, a piece shorter
  /// than announced is taken as a wire_codec frame of it: received into a
  /// buffer of its (smaller) length, decoded into its place in `dst` on a
  /// decoding thread and hashed as decoded, so the transfer's checksum is
  /// the raw bytes' either way; a frame that does not decode to exactly
  /// the piece fails the transfer. Announcing an id already pending, an id
  /// out of range or more than max_pieces pieces is an error
  /// (kvflow::error invalid_argument).
  void expect(std::uint64_t id, std::uint64_t bytes, void* dst, std::function<void(landed)> done,
              std::uint64_t piece_bytes = 0, bool compressed = false);
  /// Withdraws an announcement. True when no piece had started landing (its
  /// `done` will not run); false when some had (pieces not yet started are
  /// dropped and `done` runs, failed, once the started ones finish) or the
  /// id is unknown.
  bool cancel(std::uint64_t id);

  /// Sends the bytes of `regions`, in order, as transfer `id` to the
  /// transport at `peer`, in pieces of `piece_bytes` (0: one piece) spread
  /// over the lanes. Every region but the last must be a multiple of
  /// `piece_bytes` long (pieces do not straddle regions). The regions stay
  /// valid until `done`, which runs once on a lane's thread; a peer that
  /// vanishes fails the send rather than hanging it.
  void send(const std::vector<std::uint8_t>& peer, std::uint64_t id, std::vector<region> regions,
            std::uint64_t piece_bytes, std::function<void(sent)> done);
  /// Sends `pieces` as transfer `id`'s pieces 0, 1, ... (each raw piece
  /// as long as the receiver announced it, each frame shorter), spread over
  /// the lanes as send() does. sent.checksum is over the raw pieces: each
  /// frame's raw_checksum, each raw piece hashed as it leaves.
  void send_pieces(const std::vector<std::uint8_t>& peer, std::uint64_t id, std::vector<outgoing_piece> pieces,
                   std::function<void(sent)> done);
  /// One region in one piece.
  void send(const std::vector<std::uint8_t>& peer, std::uint64_t id, const void* data, std::size_t bytes,
            std::function<void(bool, std::string)> done);

  /// Pieces dropped: unannounced ids, sizes that differ, repeats.
  std::uint64_t refused() const;
  /// Pieces of announced transfers landed on each lane (its worker and
  /// thread received them).
  std::vector<std::uint64_t> landed_per_lane() const;
  /// Raw and wire bytes of announced transfers landed so far.
  landed_totals totals() const;

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
  std::vector<std::uint8_t> address_;
};

}  // namespace kvflow::devices::net
