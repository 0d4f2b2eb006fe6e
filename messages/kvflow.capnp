@0x89bc934dea90b525;
# Every control message of kvflow. KV bytes never travel here: messages carry
# block handles in-process and announce bulk streams across nodes.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("kvflow::wire");

enum Tier { gpu @0; host @1; disk @2; remote @3; }
enum Action { compute @0; load @1; }

# Half-open ranges of chunks and layers: the unit of planned restore work.
struct CellRange {
  chunkBegin @0 :UInt32;
  chunkEnd @1 :UInt32;
  layerBegin @2 :UInt32;
  layerEnd @3 :UInt32;
}

# A client asks for a completion of a token sequence (or of text).
struct Submit {
  requestId @0 :UInt64;
  tenant @1 :Text;
  tokens @2 :List(Int32);
  text @3 :Text;
  maxNewTokens @4 :UInt32;
  temperature @5 :Float32;
  topP @6 :Float32;
  policy @7 :Text;
  deadlineNs @8 :UInt64;
}

# A request actor tells the scheduler what it must restore.
struct Register {
  requestId @0 :UInt64;
  chunkTokens @1 :UInt32;
  numChunks @2 :UInt32;
  numLayers @3 :UInt32;
  chunkTiers @4 :List(Tier);   # tier of each cached chunk [0, P)
  chunkBytes @5 :UInt64;       # bytes of one chunk's KV for all layers
  chunkLinks @6 :List(UInt16); # link of each cached chunk inside its tier (empty: all 0)
}

# The scheduler lets a request run an action on a set of cells.
struct Grant {
  requestId @0 :UInt64;
  grantId @1 :UInt64;
  action @2 :Action;
  cells @3 :CellRange;
  tier @4 :Tier;
}

# A GPU or tier reports finished cells with their measured time.
struct CellDone {
  requestId @0 :UInt64;
  grantId @1 :UInt64;
  action @2 :Action;
  cells @3 :CellRange;
  startedNs @4 :UInt64;
  finishedNs @5 :UInt64;
  bytes @6 :UInt64;
  device @7 :UInt32;
}

# Progress of a request, for the scheduler's batch state.
struct Progress {
  requestId @0 :UInt64;
  computePointer @1 :UInt32;
  loadPointer @2 :UInt32;
  done @3 :Bool;
}

struct Lookup {
  requestId @0 :UInt64;
  keys @1 :List(Data);         # chunk keys, 32-byte SHA-256 each
}

struct ChunkLocation {
  key @0 :Data;
  chunk @1 :UInt32;
  tier @2 :Tier;
  bytes @3 :UInt64;
  link @4 :UInt16;             # which link of the tier (a remote tier's node + 1; 0: the tier's only one)
}

struct ChunkLocated {
  requestId @0 :UInt64;
  chunks @1 :List(ChunkLocation);
}

struct Load {
  requestId @0 :UInt64;
  key @1 :Data;
  layerBegin @2 :UInt32;
  layerEnd @3 :UInt32;
  tier @4 :Tier;
  handle @5 :UInt64;           # destination block handle
  deadlineNs @6 :UInt64;
}

struct Store {
  key @0 :Data;
  layerBegin @1 :UInt32;
  layerEnd @2 :UInt32;
  tier @3 :Tier;
  handle @4 :UInt64;           # source block handle
}

struct RateSample {
  tier @0 :Tier;
  bytes @1 :UInt64;
  elapsedNs @2 :UInt64;
  link @3 :UInt16;             # 0: the tier as a whole; else one link of it (ChunkLocation.link)
}

struct TierBytes {
  tier @0 :Tier;
  bytes @1 :UInt64;
}

struct Result {
  requestId @0 :UInt64;
  firstToken @1 :Int32;
  ttftNs @2 :UInt64;
  cellsComputed @3 :UInt32;
  cellsLoaded @4 :UInt32;
  bytesLoaded @5 :List(TierBytes);
  tokens @6 :List(Int32);
  text @7 :Text;
}

struct GpuInfo {
  name @0 :Text;
  memoryBytes @1 :UInt64;
}

struct TierInfo {
  tier @0 :Tier;
  capacityBytes @1 :UInt64;
  usedBytes @2 :UInt64;
}

struct NodeInventory {
  nodeId @0 :Text;
  host @1 :Text;
  port @2 :UInt16;
  gpus @3 :List(GpuInfo);
  tiers @4 :List(TierInfo);
}

struct Error {
  code @0 :UInt16;
  context @1 :Text;
  requestId @2 :UInt64;
}

# Announces a bulk transfer of KV bytes that travels beside the control
# messages (UCX, devices/net): a fetch from a node, the node's answer (sent
# once the bytes are on their way; a key the node lacks fails the fetch), a
# store to a node or the node's go-ahead. The spans of the keys' layer range
# follow one another in the keys' order.
struct Transfer {
  transferId @0 :UInt64;
  keys @1 :List(Data);         # 32-byte chunk keys
  layerBegin @2 :UInt32;
  layerEnd @3 :UInt32;
  bytes @4 :UInt64;            # total bytes of the spans
  checksum @5 :UInt64;         # devices::net::checksum in pieces; 0 where not known yet
  peer @6 :Data;               # UCX worker address of the side that sends this
}

# The KV layout of a cluster's chunks; a node refuses another model's.
struct KvLayout {
  fingerprint @0 :Data;        # 32-byte model fingerprint
  layers @1 :UInt32;
  kvHeads @2 :UInt32;
  tokens @3 :UInt32;
  headDim @4 :UInt32;
  dtype @5 :UInt8;
}

# The one frame type that crosses actors and nodes.
struct Envelope {
  union {
    submit @0 :Submit;
    register @1 :Register;
    grant @2 :Grant;
    cellDone @3 :CellDone;
    progress @4 :Progress;
    lookup @5 :Lookup;
    chunkLocated @6 :ChunkLocated;
    load @7 :Load;
    store @8 :Store;
    rateSample @9 :RateSample;
    result @10 :Result;
    nodeInventory @11 :NodeInventory;
    error @12 :Error;
    transfer @13 :Transfer;
    kvLayout @14 :KvLayout;
  }
}

# The NCCL unique id of a stage hand-off communicator (kernels/cuda/
# nccl_link): made by one rank, sent to every other rank before it joins.
struct NcclUniqueId {
  id @0 :Data;                 # ncclUniqueId's 128 bytes
  ranks @1 :UInt32;            # communicator size
  rank @2 :UInt32;             # the rank the receiver takes
}
