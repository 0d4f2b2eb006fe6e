#include "kernels/model/stage_link.hpp"

#include <cstring>
#include <vector>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include "messages/error.hpp"
#include "messages/kvflow.capnp.h"

namespace kvflow::model {
namespace {

class host_link final : public stage_link {
 public:
  host_link(engine& sender, engine& receiver) : sender_(sender), receiver_(receiver) {}

  void send(const void* src, void* dst, std::size_t bytes) override {
    // One staging buffer reused across hand-offs: a link has one sender.
    staging_.resize(bytes);
    sender_.to_host(staging_.data(), src, bytes);
    receiver_.to_backend(dst, staging_.data(), bytes);
  }
  const char* kind() const override { return "host"; }

 private:
  engine& sender_;
  engine& receiver_;
  std::vector<unsigned char> staging_;
};

}  // namespace

std::unique_ptr<stage_link> make_host_link(engine& sender, engine& receiver) {
  return std::make_unique<host_link>(sender, receiver);
}

std::vector<std::uint8_t> encode_link_id(const link_id& id) {
  capnp::MallocMessageBuilder builder;
  auto m = builder.initRoot<wire::NcclUniqueId>();
  m.setId(capnp::Data::Reader(id.id.data(), id.id.size()));
  m.setRanks(id.ranks);
  m.setRank(id.rank);
  auto words = capnp::messageToFlatArray(builder);
  auto bytes = words.asBytes();
  return {bytes.begin(), bytes.end()};
}

link_id decode_link_id(const std::vector<std::uint8_t>& bytes) {
  if (bytes.empty() || bytes.size() % sizeof(capnp::word) != 0 || bytes.size() > 4096)
    throw error(errc::malformed_frame, "NCCL id message of " + std::to_string(bytes.size()) + " bytes");
  // Cap'n Proto reads word-aligned memory only.
  auto words = kj::heapArray<capnp::word>(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), bytes.data(), bytes.size());
  link_id out;
  try {
    capnp::ReaderOptions options;
    options.traversalLimitInWords = 1024;
    capnp::FlatArrayMessageReader reader(words, options);
    auto m = reader.getRoot<wire::NcclUniqueId>();
    auto id = m.getId();
    if (id.size() != out.id.size())
      throw error(errc::out_of_range, "NCCL id of " + std::to_string(id.size()) + " bytes, expected 128");
    std::memcpy(out.id.data(), id.begin(), id.size());
    out.ranks = m.getRanks();
    out.rank = m.getRank();
  } catch (const kj::Exception& e) {
    throw error(errc::malformed_frame, std::string("NCCL id message: ") + e.getDescription().cStr());
  }
  if (out.rank >= out.ranks)
    throw error(errc::out_of_range,
                "NCCL id for rank " + std::to_string(out.rank) + " of " + std::to_string(out.ranks) + " ranks");
  return out;
}

}  // namespace kvflow::model
