#include "messages/codec.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstring>
#include <string>
#include <type_traits>

#include "messages/kvflow.capnp.h"

namespace kvflow::msg {
namespace {

// ---------------------------------------------------------------- encoding

wire::Tier to_wire(tier t) { return static_cast<wire::Tier>(t); }
wire::Action to_wire(action a) { return static_cast<wire::Action>(a); }

void put(wire::CellRange::Builder b, const cell_range& c) {
  b.setChunkBegin(c.chunk_begin);
  b.setChunkEnd(c.chunk_end);
  b.setLayerBegin(c.layer_begin);
  b.setLayerEnd(c.layer_end);
}

capnp::Data::Reader bytes_of(const chunk_key& k) { return {k.data(), k.size()}; }

template <class Builder, class T>
void put_ints(Builder list, const std::vector<T>& v) {
  for (unsigned i = 0; i < v.size(); ++i) list.set(i, v[i]);
}

struct encoder {
  wire::Envelope::Builder env;

  void operator()(const submit& m) {
    auto b = env.initSubmit();
    b.setRequestId(m.request_id);
    b.setTenant(m.tenant);
    put_ints(b.initTokens(m.tokens.size()), m.tokens);
    b.setText(m.text);
    b.setMaxNewTokens(m.max_new_tokens);
    b.setTemperature(m.temperature);
    b.setTopP(m.top_p);
    b.setPolicy(m.policy);
    b.setDeadlineNs(m.deadline_ns);
  }
  void operator()(const register_request& m) {
    auto b = env.initRegister();
    b.setRequestId(m.request_id);
    b.setChunkTokens(m.chunk_tokens);
    b.setNumChunks(m.num_chunks);
    b.setNumLayers(m.num_layers);
    auto tiers = b.initChunkTiers(m.chunk_tiers.size());
    for (unsigned i = 0; i < m.chunk_tiers.size(); ++i) tiers.set(i, to_wire(m.chunk_tiers[i]));
    b.setChunkBytes(m.chunk_bytes);
    if (!m.chunk_links.empty()) {
      auto links = b.initChunkLinks(m.chunk_links.size());
      for (unsigned i = 0; i < m.chunk_links.size(); ++i) links.set(i, m.chunk_links[i]);
    }
  }
  void operator()(const grant& m) {
    auto b = env.initGrant();
    b.setRequestId(m.request_id);
    b.setGrantId(m.grant_id);
    b.setAction(to_wire(m.act));
    put(b.initCells(), m.cells);
    b.setTier(to_wire(m.source));
  }
  void operator()(const cell_done& m) {
    auto b = env.initCellDone();
    b.setRequestId(m.request_id);
    b.setGrantId(m.grant_id);
    b.setAction(to_wire(m.act));
    put(b.initCells(), m.cells);
    b.setStartedNs(m.started_ns);
    b.setFinishedNs(m.finished_ns);
    b.setBytes(m.bytes);
    b.setDevice(m.device);
  }
  void operator()(const progress& m) {
    auto b = env.initProgress();
    b.setRequestId(m.request_id);
    b.setComputePointer(m.compute_pointer);
    b.setLoadPointer(m.load_pointer);
    b.setDone(m.done);
  }
  void operator()(const lookup& m) {
    auto b = env.initLookup();
    b.setRequestId(m.request_id);
    auto keys = b.initKeys(m.keys.size());
    for (unsigned i = 0; i < m.keys.size(); ++i) keys.set(i, bytes_of(m.keys[i]));
  }
  void operator()(const chunk_located& m) {
    auto b = env.initChunkLocated();
    b.setRequestId(m.request_id);
    auto list = b.initChunks(m.chunks.size());
    for (unsigned i = 0; i < m.chunks.size(); ++i) {
      auto c = list[i];
      c.setKey(bytes_of(m.chunks[i].key));
      c.setChunk(m.chunks[i].chunk);
      c.setTier(to_wire(m.chunks[i].where));
      c.setBytes(m.chunks[i].bytes);
      c.setLink(m.chunks[i].link);
    }
  }
  void operator()(const load& m) {
    auto b = env.initLoad();
    b.setRequestId(m.request_id);
    b.setKey(bytes_of(m.key));
    b.setLayerBegin(m.layer_begin);
    b.setLayerEnd(m.layer_end);
    b.setTier(to_wire(m.source));
    b.setHandle(m.handle);
    b.setDeadlineNs(m.deadline_ns);
  }
  void operator()(const store& m) {
    auto b = env.initStore();
    b.setKey(bytes_of(m.key));
    b.setLayerBegin(m.layer_begin);
    b.setLayerEnd(m.layer_end);
    b.setTier(to_wire(m.target));
    b.setHandle(m.handle);
  }
  void operator()(const rate_sample& m) {
    auto b = env.initRateSample();
    b.setTier(to_wire(m.source));
    b.setBytes(m.bytes);
    b.setElapsedNs(m.elapsed_ns);
    b.setLink(m.link);
  }
  void operator()(const result& m) {
    auto b = env.initResult();
    b.setRequestId(m.request_id);
    b.setFirstToken(m.first_token);
    b.setTtftNs(m.ttft_ns);
    b.setCellsComputed(m.cells_computed);
    b.setCellsLoaded(m.cells_loaded);
    auto list = b.initBytesLoaded(m.bytes_loaded.size());
    for (unsigned i = 0; i < m.bytes_loaded.size(); ++i) {
      list[i].setTier(to_wire(m.bytes_loaded[i].where));
      list[i].setBytes(m.bytes_loaded[i].bytes);
    }
    put_ints(b.initTokens(m.tokens.size()), m.tokens);
    b.setText(m.text);
  }
  void operator()(const node_inventory& m) {
    auto b = env.initNodeInventory();
    b.setNodeId(m.node_id);
    b.setHost(m.host);
    b.setPort(m.port);
    auto gpus = b.initGpus(m.gpus.size());
    for (unsigned i = 0; i < m.gpus.size(); ++i) {
      gpus[i].setName(m.gpus[i].name);
      gpus[i].setMemoryBytes(m.gpus[i].memory_bytes);
    }
    auto tiers = b.initTiers(m.tiers.size());
    for (unsigned i = 0; i < m.tiers.size(); ++i) {
      tiers[i].setTier(to_wire(m.tiers[i].where));
      tiers[i].setCapacityBytes(m.tiers[i].capacity_bytes);
      tiers[i].setUsedBytes(m.tiers[i].used_bytes);
    }
  }
  void operator()(const transfer& m) {
    auto b = env.initTransfer();
    b.setTransferId(m.transfer_id);
    auto keys = b.initKeys(m.keys.size());
    for (unsigned i = 0; i < m.keys.size(); ++i) keys.set(i, bytes_of(m.keys[i]));
    b.setLayerBegin(m.layer_begin);
    b.setLayerEnd(m.layer_end);
    b.setBytes(m.bytes);
    b.setChecksum(m.checksum);
    b.setPeer(capnp::Data::Reader(m.peer.data(), m.peer.size()));
  }
  void operator()(const kv_layout& m) {
    auto b = env.initKvLayout();
    b.setFingerprint(capnp::Data::Reader(m.fingerprint.data(), m.fingerprint.size()));
    b.setLayers(m.layers);
    b.setKvHeads(m.kv_heads);
    b.setTokens(m.tokens);
    b.setHeadDim(m.head_dim);
    b.setDtype(m.dtype);
  }
  void operator()(const error_report& m) {
    auto b = env.initError();
    b.setCode(m.code);
    b.setContext(m.context);
    b.setRequestId(m.request_id);
  }
};

// ---------------------------------------------------------------- decoding

// Thrown inside decode and turned into an error value at its boundary.
struct range_error {
  std::string what;
};

struct decoder {
  const limits& lim;

  [[noreturn]] void fail(const std::string& what) const { throw range_error{what}; }

  tier get(wire::Tier t, const char* field) const {
    auto v = static_cast<unsigned>(t);
    if (v > static_cast<unsigned>(tier::remote)) fail(std::string(field) + ": unknown tier " + std::to_string(v));
    return static_cast<tier>(v);
  }
  action get(wire::Action a, const char* field) const {
    auto v = static_cast<unsigned>(a);
    if (v > static_cast<unsigned>(action::load)) fail(std::string(field) + ": unknown action " + std::to_string(v));
    return static_cast<action>(v);
  }
  std::string text(capnp::Text::Reader t, const char* field) const {
    if (t.size() > lim.max_text) fail(std::string(field) + ": text of " + std::to_string(t.size()) + " bytes over cap");
    return std::string(t.cStr(), t.size());
  }
  chunk_key key(capnp::Data::Reader d, const char* field) const {
    chunk_key k{};
    if (d.size() != k.size()) fail(std::string(field) + ": key of " + std::to_string(d.size()) + " bytes, want 32");
    std::memcpy(k.data(), d.begin(), k.size());
    return k;
  }
  void layers(std::uint32_t begin, std::uint32_t end, const char* field) const {
    if (begin > end || end > lim.max_layers)
      fail(std::string(field) + ": layer range [" + std::to_string(begin) + ", " + std::to_string(end) + ") invalid");
  }
  cell_range cells(wire::CellRange::Reader r, const char* field) const {
    cell_range c{r.getChunkBegin(), r.getChunkEnd(), r.getLayerBegin(), r.getLayerEnd()};
    if (c.chunk_begin > c.chunk_end || c.chunk_end > lim.max_chunks)
      fail(std::string(field) + ": chunk range [" + std::to_string(c.chunk_begin) + ", " + std::to_string(c.chunk_end) +
           ") invalid");
    layers(c.layer_begin, c.layer_end, field);
    return c;
  }
  template <class List>
  void size(List l, std::size_t cap, const char* field) const {
    if (l.size() > cap)
      fail(std::string(field) + ": " + std::to_string(l.size()) + " entries over cap " + std::to_string(cap));
  }
  std::vector<std::int32_t> tokens(capnp::List<std::int32_t>::Reader l, const char* field) const {
    size(l, lim.max_tokens, field);
    std::vector<std::int32_t> out;
    out.reserve(l.size());
    for (auto t : l) out.push_back(t);
    for (auto t : out)
      if (t < 0) fail(std::string(field) + ": negative token id " + std::to_string(t));
    return out;
  }

  message operator()(wire::Envelope::Reader env) const {
    switch (env.which()) {
      case wire::Envelope::SUBMIT: {
        auto r = env.getSubmit();
        submit m;
        m.request_id = r.getRequestId();
        m.tenant = text(r.getTenant(), "submit.tenant");
        m.tokens = tokens(r.getTokens(), "submit.tokens");
        m.text = text(r.getText(), "submit.text");
        m.max_new_tokens = r.getMaxNewTokens();
        if (m.max_new_tokens > lim.max_tokens) fail("submit.maxNewTokens: over cap");
        m.temperature = r.getTemperature();
        if (!(m.temperature >= 0 && m.temperature <= 100)) fail("submit.temperature: not in [0, 100]");
        m.top_p = r.getTopP();
        if (!(m.top_p >= 0 && m.top_p <= 1)) fail("submit.topP: not in [0, 1]");
        m.policy = text(r.getPolicy(), "submit.policy");
        m.deadline_ns = r.getDeadlineNs();
        return m;
      }
      case wire::Envelope::REGISTER: {
        auto r = env.getRegister();
        register_request m;
        m.request_id = r.getRequestId();
        m.chunk_tokens = r.getChunkTokens();
        m.num_chunks = r.getNumChunks();
        m.num_layers = r.getNumLayers();
        if (m.num_chunks > lim.max_chunks) fail("register.numChunks: over cap");
        if (m.num_layers > lim.max_layers) fail("register.numLayers: over cap");
        auto tiers = r.getChunkTiers();
        if (tiers.size() > m.num_chunks) fail("register.chunkTiers: more entries than numChunks");
        for (auto t : tiers) m.chunk_tiers.push_back(get(t, "register.chunkTiers"));
        m.chunk_bytes = r.getChunkBytes();
        auto links = r.getChunkLinks();
        if (links.size() > 0 && links.size() != tiers.size()) fail("register.chunkLinks: not one per cached chunk");
        for (auto l : links) m.chunk_links.push_back(l);
        if (m.num_chunks > 0 && (m.chunk_tokens == 0 || m.chunk_tokens > lim.max_tokens))
          fail("register.chunkTokens: " + std::to_string(m.chunk_tokens) + " not in [1, " +
               std::to_string(lim.max_tokens) + "]");
        if (m.chunk_bytes > lim.max_chunk_bytes) fail("register.chunkBytes: over cap");
        return m;
      }
      case wire::Envelope::GRANT: {
        auto r = env.getGrant();
        return grant{r.getRequestId(), r.getGrantId(), get(r.getAction(), "grant.action"),
                     cells(r.getCells(), "grant.cells"), get(r.getTier(), "grant.tier")};
      }
      case wire::Envelope::CELL_DONE: {
        auto r = env.getCellDone();
        cell_done m{r.getRequestId(),
                    r.getGrantId(),
                    get(r.getAction(), "cellDone.action"),
                    cells(r.getCells(), "cellDone.cells"),
                    r.getStartedNs(),
                    r.getFinishedNs(),
                    r.getBytes(),
                    r.getDevice()};
        if (m.finished_ns < m.started_ns) fail("cellDone.finishedNs: before startedNs");
        if (m.device >= lim.max_devices) fail("cellDone.device: " + std::to_string(m.device) + " over cap");
        return m;
      }
      case wire::Envelope::PROGRESS: {
        auto r = env.getProgress();
        progress m{r.getRequestId(), r.getComputePointer(), r.getLoadPointer(), r.getDone()};
        if (m.compute_pointer > lim.max_chunks || m.load_pointer > lim.max_chunks) fail("progress: pointer over cap");
        return m;
      }
      case wire::Envelope::LOOKUP: {
        auto r = env.getLookup();
        lookup m;
        m.request_id = r.getRequestId();
        size(r.getKeys(), lim.max_chunks, "lookup.keys");
        for (auto k : r.getKeys()) m.keys.push_back(key(k, "lookup.keys"));
        return m;
      }
      case wire::Envelope::CHUNK_LOCATED: {
        auto r = env.getChunkLocated();
        chunk_located m;
        m.request_id = r.getRequestId();
        size(r.getChunks(), lim.max_chunks, "chunkLocated.chunks");
        for (auto c : r.getChunks()) {
          if (c.getChunk() >= lim.max_chunks) fail("chunkLocated.chunks.chunk: over cap");
          if (c.getBytes() > lim.max_chunk_bytes) fail("chunkLocated.chunks.bytes: over cap");
          m.chunks.push_back({key(c.getKey(), "chunkLocated.chunks.key"), c.getChunk(),
                              get(c.getTier(), "chunkLocated.chunks.tier"), c.getBytes(), c.getLink()});
        }
        return m;
      }
      case wire::Envelope::LOAD: {
        auto r = env.getLoad();
        load m{r.getRequestId(), key(r.getKey(), "load.key"),   r.getLayerBegin(),
               r.getLayerEnd(),  get(r.getTier(), "load.tier"), r.getHandle(),
               r.getDeadlineNs()};
        layers(m.layer_begin, m.layer_end, "load");
        return m;
      }
      case wire::Envelope::STORE: {
        auto r = env.getStore();
        store m{key(r.getKey(), "store.key"), r.getLayerBegin(), r.getLayerEnd(), get(r.getTier(), "store.tier"),
                r.getHandle()};
        layers(m.layer_begin, m.layer_end, "store");
        return m;
      }
      case wire::Envelope::RATE_SAMPLE: {
        auto r = env.getRateSample();
        return rate_sample{get(r.getTier(), "rateSample.tier"), r.getBytes(), r.getElapsedNs(), r.getLink()};
      }
      case wire::Envelope::RESULT: {
        auto r = env.getResult();
        result m;
        m.request_id = r.getRequestId();
        m.first_token = r.getFirstToken();
        if (m.first_token < -1) fail("result.firstToken: " + std::to_string(m.first_token) + " is negative");
        m.ttft_ns = r.getTtftNs();
        m.cells_computed = r.getCellsComputed();
        m.cells_loaded = r.getCellsLoaded();
        size(r.getBytesLoaded(), 16, "result.bytesLoaded");
        for (auto b : r.getBytesLoaded())
          m.bytes_loaded.push_back({get(b.getTier(), "result.bytesLoaded.tier"), b.getBytes()});
        m.tokens = tokens(r.getTokens(), "result.tokens");
        m.text = text(r.getText(), "result.text");
        return m;
      }
      case wire::Envelope::NODE_INVENTORY: {
        auto r = env.getNodeInventory();
        node_inventory m;
        m.node_id = text(r.getNodeId(), "nodeInventory.nodeId");
        m.host = text(r.getHost(), "nodeInventory.host");
        m.port = r.getPort();
        size(r.getGpus(), lim.max_devices, "nodeInventory.gpus");
        for (auto g : r.getGpus()) m.gpus.push_back({text(g.getName(), "nodeInventory.gpus.name"), g.getMemoryBytes()});
        size(r.getTiers(), 16, "nodeInventory.tiers");
        for (auto t : r.getTiers())
          m.tiers.push_back({get(t.getTier(), "nodeInventory.tiers.tier"), t.getCapacityBytes(), t.getUsedBytes()});
        return m;
      }
      case wire::Envelope::ERROR: {
        auto r = env.getError();
        if (r.getCode() > static_cast<std::uint16_t>(errc::unsupported))
          fail("error.code: unknown code " + std::to_string(r.getCode()));
        return error_report{r.getCode(), text(r.getContext(), "error.context"), r.getRequestId()};
      }
      case wire::Envelope::TRANSFER: {
        auto r = env.getTransfer();
        transfer m;
        m.transfer_id = r.getTransferId();
        size(r.getKeys(), lim.max_chunks, "transfer.keys");
        for (auto k : r.getKeys()) m.keys.push_back(key(k, "transfer.keys"));
        m.layer_begin = r.getLayerBegin();
        m.layer_end = r.getLayerEnd();
        layers(m.layer_begin, m.layer_end, "transfer");
        m.bytes = r.getBytes();
        if (m.bytes / lim.max_chunk_bytes > m.keys.size()) fail("transfer.bytes: over cap for its keys");
        m.checksum = r.getChecksum();
        auto peer = r.getPeer();
        if (peer.size() > lim.max_peer_bytes) fail("transfer.peer: address over cap");
        m.peer.assign(peer.begin(), peer.end());
        return m;
      }
      case wire::Envelope::KV_LAYOUT: {
        auto r = env.getKvLayout();
        kv_layout m;
        auto fp = r.getFingerprint();
        if (fp.size() != m.fingerprint.size()) fail("kvLayout.fingerprint: not 32 bytes");
        std::memcpy(m.fingerprint.data(), fp.begin(), fp.size());
        m.layers = r.getLayers();
        m.kv_heads = r.getKvHeads();
        m.tokens = r.getTokens();
        m.head_dim = r.getHeadDim();
        m.dtype = r.getDtype();
        if (m.layers == 0 || m.layers > lim.max_layers) fail("kvLayout.layers: not in [1, max_layers]");
        if (m.kv_heads == 0 || m.kv_heads > 4096 || m.head_dim == 0 || m.head_dim > 4096)
          fail("kvLayout: heads or head_dim not in [1, 4096]");
        if (m.tokens == 0 || m.tokens > lim.max_tokens) fail("kvLayout.tokens: not in [1, max_tokens]");
        if (m.dtype > 15) fail("kvLayout.dtype: unknown");
        return m;
      }
    }
    fail("envelope: unknown message kind " + std::to_string(static_cast<unsigned>(env.which())));
  }
};

}  // namespace

const char* to_string(tier t) {
  switch (t) {
    case tier::gpu:
      return "gpu";
    case tier::host:
      return "host";
    case tier::disk:
      return "disk";
    case tier::remote:
      return "remote";
  }
  return "unknown";
}

const char* to_string(action a) { return a == action::compute ? "compute" : "load"; }

frame encode(const message& m) {
  capnp::MallocMessageBuilder builder;
  std::visit(encoder{builder.initRoot<wire::Envelope>()}, m);
  // Read the built message back through the decoder's value checks: a frame
  // this side would refuse is an error here, at the sender, not at the peer.
  try {
    decoder{limits{}}(builder.getRoot<wire::Envelope>().asReader());
  } catch (const range_error& e) {
    throw error(errc::out_of_range, "encode " + std::string(kind_name(m)) + ": " + e.what);
  }
  auto words = capnp::messageToFlatArray(builder);
  auto bytes = words.asChars();
  return frame{std::vector<char>(bytes.begin(), bytes.end())};
}

expected<message> decode(const char* data, std::size_t size, const limits& lim) {
  if (size > lim.max_frame_bytes)
    return error(errc::frame_too_large,
                 "frame of " + std::to_string(size) + " bytes over cap of " + std::to_string(lim.max_frame_bytes));
  if (size == 0 || size % sizeof(capnp::word) != 0)
    return error(errc::malformed_frame, "frame of " + std::to_string(size) + " bytes is not a whole number of words");
  // Cap'n Proto reads word-aligned memory only: copy into word storage.
  auto words = kj::heapArray<capnp::word>(size / sizeof(capnp::word));
  std::memcpy(words.begin(), data, size);
  try {
    capnp::ReaderOptions options;
    options.traversalLimitInWords = lim.traversal_words;
    options.nestingLimit = lim.nesting;
    capnp::FlatArrayMessageReader reader(words, options);
    if (reader.getEnd() != words.end())
      return error(
          errc::malformed_frame,
          "frame has " + std::to_string((words.end() - reader.getEnd()) * sizeof(capnp::word)) + " trailing bytes");
    return decoder{lim}(reader.getRoot<wire::Envelope>());
  } catch (const range_error& e) {
    return error(errc::out_of_range, e.what);
  } catch (const kj::Exception& e) {
    return error(errc::malformed_frame, std::string("capnp: ") + e.getDescription().cStr());
  }
}

bool same(const message& a, const message& b) { return encode(a).bytes == encode(b).bytes; }

const char* kind_name(const message& m) {
  static constexpr const char* names[] = {"submit", "register",      "grant", "cellDone", "progress",
                                          "lookup", "chunkLocated",  "load",  "store",    "rateSample",
                                          "result", "nodeInventory", "error", "transfer", "kvLayout"};
  static_assert(std::size(names) == std::variant_size_v<message>);
  return names[m.index()];
}

}  // namespace kvflow::msg
