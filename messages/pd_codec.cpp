#include "messages/pd_codec.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstring>

#include "messages/pd.capnp.h"

namespace kvflow::msg {
namespace {

capnp::Data::Reader data_of(const std::vector<std::uint8_t>& v) { return {v.data(), v.size()}; }
std::vector<std::uint8_t> bytes_of(capnp::Data::Reader d) { return {d.begin(), d.end()}; }

std::vector<char> flatten(capnp::MallocMessageBuilder& b) {
  auto words = capnp::messageToFlatArray(b);
  auto bytes = words.asBytes();
  return {reinterpret_cast<const char*>(bytes.begin()), reinterpret_cast<const char*>(bytes.end())};
}

void fill(wire::KvAnnounce::Builder b, const kv_announce& m) {
  b.setTransferId(m.transfer_id);
  b.setBytes(m.bytes);
  b.setChecksum(m.checksum);
  b.setLayers(static_cast<std::uint32_t>(m.shape.layers));
  b.setKvHeads(static_cast<std::uint32_t>(m.shape.kv_heads));
  b.setHeadDim(static_cast<std::uint32_t>(m.shape.head_dim));
  b.setDtype(static_cast<std::uint8_t>(m.shape.type));
  b.setTokens(static_cast<std::uint32_t>(m.shape.tokens));
  b.setChunkTokens(static_cast<std::uint32_t>(m.chunk_tokens));
  b.setLayerBegin(static_cast<std::uint32_t>(m.layer_begin));
  b.setLayerEnd(static_cast<std::uint32_t>(m.layer_end));
  b.setContiguous(m.contiguous);
  b.setPieces(m.pieces);
  b.setIpcHandle(data_of(m.ipc_handle));
  b.setSender(data_of(m.sender));
}

kv_announce read(wire::KvAnnounce::Reader r) {
  constexpr std::uint32_t max_dim = 1u << 20;
  if (r.getLayers() > 4096 || r.getKvHeads() > 4096 || r.getHeadDim() > 4096 || r.getTokens() > max_dim ||
      r.getChunkTokens() > max_dim || r.getDtype() > 1 || r.getLayerBegin() > r.getLayerEnd() ||
      r.getLayerEnd() > r.getLayers())
    throw error(errc::out_of_range, "kv announce: shape or layer range out of range");
  kv_announce m;
  m.transfer_id = r.getTransferId();
  m.bytes = r.getBytes();
  m.checksum = r.getChecksum();
  m.shape = {static_cast<int>(r.getLayers()), static_cast<int>(r.getKvHeads()), static_cast<int>(r.getTokens()),
             static_cast<int>(r.getHeadDim()), static_cast<model::dtype>(r.getDtype())};
  m.chunk_tokens = static_cast<int>(r.getChunkTokens());
  m.layer_begin = static_cast<int>(r.getLayerBegin());
  m.layer_end = static_cast<int>(r.getLayerEnd());
  m.contiguous = r.getContiguous();
  m.pieces = r.getPieces();
  m.ipc_handle = bytes_of(r.getIpcHandle());
  m.sender = bytes_of(r.getSender());
  if (m.bytes != m.shape.span_bytes(m.layer_begin, m.layer_end))
    throw error(errc::out_of_range, "kv announce: " + std::to_string(m.bytes) + " bytes do not match its shape");
  return m;
}

// Parses `bytes` as untrusted: capped, copied to aligned words, read under
// limits; Cap'n Proto's exceptions become kvflow errors.
template <class T, class F>
expected<T> parse(const std::vector<char>& bytes, const char* what, F&& f) {
  if (bytes.size() > max_pd_frame_bytes)
    return error(errc::frame_too_large, std::string(what) + ": " + std::to_string(bytes.size()) + " bytes");
  if (bytes.empty() || bytes.size() % sizeof(capnp::word) != 0)
    return error(errc::malformed_frame, std::string(what) + ": not a whole number of words");
  std::vector<capnp::word> words(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.data(), bytes.data(), bytes.size());
  try {
    capnp::ReaderOptions opts;
    opts.traversalLimitInWords = words.size() * 2 + 64;
    opts.nestingLimit = 16;
    capnp::FlatArrayMessageReader reader(kj::arrayPtr(words.data(), words.size()), opts);
    return f(reader);
  } catch (const error& e) {
    return e;
  } catch (const kj::Exception& e) {
    return error(errc::malformed_frame, std::string(what) + ": " + e.getDescription().cStr());
  }
}

}  // namespace

std::vector<char> encode(const kv_announce& m) {
  capnp::MallocMessageBuilder b;
  fill(b.initRoot<wire::KvAnnounce>(), m);
  return flatten(b);
}

std::vector<char> encode(const pd_handoff& m) {
  capnp::MallocMessageBuilder b;
  auto r = b.initRoot<wire::PdHandoff>();
  r.setRequestId(m.request_id);
  auto p = r.initPrompt(static_cast<unsigned>(m.prompt.size()));
  for (unsigned i = 0; i < m.prompt.size(); ++i) p.set(i, m.prompt[i]);
  r.setFirstToken(m.first_token);
  r.setMaxNewTokens(m.max_new_tokens);
  r.setTemperature(m.temperature);
  r.setTopP(m.top_p);
  r.setSeed(m.seed);
  auto s = r.initStopTokens(static_cast<unsigned>(m.stop_tokens.size()));
  for (unsigned i = 0; i < m.stop_tokens.size(); ++i) s.set(i, m.stop_tokens[i]);
  fill(r.initKv(), m.kv);
  return flatten(b);
}

std::vector<char> encode(const pd_reply& m) {
  capnp::MallocMessageBuilder b;
  auto r = b.initRoot<wire::PdReply>();
  r.setRequestId(m.request_id);
  r.setOk(m.ok);
  r.setWhy(m.why);
  r.setReceiver(data_of(m.receiver));
  auto t = r.initTokens(static_cast<unsigned>(m.tokens.size()));
  for (unsigned i = 0; i < m.tokens.size(); ++i) t.set(i, m.tokens[i]);
  r.setTransferNs(m.transfer_ns);
  return flatten(b);
}

expected<kv_announce> decode_kv_announce(const std::vector<char>& bytes) {
  return parse<kv_announce>(bytes, "kv announce",
                            [](capnp::MessageReader& r) { return read(r.getRoot<wire::KvAnnounce>()); });
}

expected<pd_handoff> decode_pd_handoff(const std::vector<char>& bytes) {
  return parse<pd_handoff>(bytes, "pd handoff", [](capnp::MessageReader& reader) {
    auto r = reader.getRoot<wire::PdHandoff>();
    pd_handoff m;
    m.request_id = r.getRequestId();
    for (auto t : r.getPrompt()) m.prompt.push_back(t);
    m.first_token = r.getFirstToken();
    m.max_new_tokens = r.getMaxNewTokens();
    m.temperature = r.getTemperature();
    m.top_p = r.getTopP();
    m.seed = r.getSeed();
    for (auto t : r.getStopTokens()) m.stop_tokens.push_back(t);
    m.kv = read(r.getKv());
    if (m.kv.shape.tokens != static_cast<int>(m.prompt.size()))
      throw error(errc::out_of_range, "pd handoff: KV tokens differ from the prompt's");
    return m;
  });
}

expected<pd_reply> decode_pd_reply(const std::vector<char>& bytes) {
  return parse<pd_reply>(bytes, "pd reply", [](capnp::MessageReader& reader) {
    auto r = reader.getRoot<wire::PdReply>();
    pd_reply m;
    m.request_id = r.getRequestId();
    m.ok = r.getOk();
    m.why = r.getWhy();
    m.receiver = bytes_of(r.getReceiver());
    for (auto t : r.getTokens()) m.tokens.push_back(t);
    m.transfer_ns = r.getTransferNs();
    return m;
  });
}

}  // namespace kvflow::msg
