@0xc5d1f0a7e3b24c19;
# Prefill/decode disaggregation: the control messages that announce a
# request's KV moving from a prefill instance to a decode instance. The KV
# bytes themselves go by UCX (host memory) or stay in device memory that the
# receiver maps through a CUDA IPC handle; these only describe them.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("kvflow::wire");

# One announced KV transfer: `pieces` calls of the transport, ids
# transferId .. transferId + pieces - 1, `bytes` in all.
struct KvAnnounce {
  transferId @0 :UInt64;
  bytes @1 :UInt64;
  checksum @2 :UInt64;      # XXH3-64 of the bytes in the receiver's layout
  layers @3 :UInt32;
  kvHeads @4 :UInt32;
  headDim @5 :UInt32;
  dtype @6 :UInt8;          # model::dtype
  tokens @7 :UInt32;
  chunkTokens @8 :UInt32;
  layerBegin @9 :UInt32;
  layerEnd @10 :UInt32;
  contiguous @11 :Bool;     # one span per layer range; else one piece per (chunk, layer)
  pieces @12 :UInt32;
  ipcHandle @13 :Data;      # cudaIpcMemHandle_t of the sender's allocation; empty on the host path
  sender @14 :Data;         # the sender's UCX worker address; empty on the IPC path
}

# A prefill instance hands a request over to a decode instance after its
# first token: the prompt, the first token, how to go on, and its KV.
struct PdHandoff {
  requestId @0 :UInt64;
  prompt @1 :List(Int32);
  firstToken @2 :Int32;
  maxNewTokens @3 :UInt32;
  temperature @4 :Float32;
  topP @5 :Float32;
  seed @6 :UInt64;
  stopTokens @7 :List(Int32);
  kv @8 :KvAnnounce;
}

# A decode instance's answers: ready to receive (its UCX address), or the
# generated tokens (the first included) once decoding ended.
struct PdReply {
  requestId @0 :UInt64;
  ok @1 :Bool;
  why @2 :Text;
  receiver @3 :Data;
  tokens @4 :List(Int32);
  transferNs @5 :UInt64;    # announce to last byte landed, at the receiver
}
