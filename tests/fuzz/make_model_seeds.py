#!/usr/bin/env python3
"""Writes the seed corpora of the gguf, safetensors and tokenizer fuzz targets:
a tiny llama GGUF (1 layer, hidden 32, byte-level BPE tokenizer, one tensor of
each dequantized type), a tiny llama safetensors folder, and tokenizer texts
and id lists. Run from the repository root:
python3 tests/fuzz/make_model_seeds.py tests/fuzz/corpus"""

import json
import os
import struct
import sys

out = sys.argv[1] if len(sys.argv) > 1 else "tests/fuzz/corpus"

# ------------------------------------------------------------------ GGUF

def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b

U32, I32, F32, BOOL, STR, ARR = 4, 5, 6, 7, 8, 9

def kv(key, t, v):
    if t == STR:
        body = gstr(v)
    elif t == U32:
        body = struct.pack("<I", v)
    elif t == I32:
        body = struct.pack("<i", v)
    elif t == F32:
        body = struct.pack("<f", v)
    elif t == BOOL:
        body = struct.pack("<B", v)
    elif t == ARR:
        et, items = v
        body = struct.pack("<IQ", et, len(items))
        for it in items:
            body += gstr(it) if et == STR else struct.pack("<i", it)
    return gstr(key) + struct.pack("<I", t) + body

# ggml types and (block elems, block bytes)
F32T, F16T, Q4_0, Q4_1, Q8_0, BF16 = 0, 1, 2, 3, 8, 30
BLOCK = {F32T: (1, 4), F16T: (1, 2), Q4_0: (32, 18), Q4_1: (32, 20), Q8_0: (32, 34), BF16: (1, 2)}

def tensor_bytes(t, n, seed):
    be, bb = BLOCK[t]
    blocks = n // be
    if t == F32T:
        return b"".join(struct.pack("<f", ((seed + i) % 7 - 3) * 0.125) for i in range(n))
    if t in (F16T, BF16):
        # 0x3c00 is 1.0 in fp16; 0x3f80 is 1.0 in bf16
        one = 0x3C00 if t == F16T else 0x3F80
        return b"".join(struct.pack("<H", one + (seed + i) % 5) for i in range(n))
    out_ = b""
    for b in range(blocks):
        d = struct.pack("<H", 0x2C00)  # fp16 0.0625
        if t == Q4_0:
            out_ += d + bytes((seed + b + k) % 256 for k in range(16))
        elif t == Q4_1:
            out_ += d + struct.pack("<H", 0xB800) + bytes((seed * 3 + b + k) % 256 for k in range(16))
        elif t == Q8_0:
            out_ += d + bytes((seed + b * 5 + k) % 256 for k in range(32))
    return out_

def gguf(kvs, tensors, align=32, version=3):
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)) + b"".join(kvs)
    infos, datas, off = b"", [], 0
    for name, dims, t, seed in tensors:
        n = 1
        for d in dims:
            n *= d
        data = tensor_bytes(t, n, seed)
        pad = (-off) % align
        off += pad
        infos += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        infos += struct.pack("<IQ", t, off)
        datas.append((pad, data))
        off += len(data)
    blob = head + infos
    blob += b"\0" * ((-len(blob)) % align)
    for pad, data in datas:
        blob += b"\0" * pad + data
    return blob

# A byte-level vocabulary: GPT-2's byte-to-unicode map over printable ASCII,
# a few merges, and the chat special tokens.
def byte_char(b):
    if 33 <= b <= 126:
        return chr(b)
    return chr(256 + b) if b < 33 else chr(256 + b - 94 + 33)  # approximate; enough for seeds

vocab = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
types = [3, 3, 3]
for b in range(32, 127):
    vocab.append("\u0120" if b == 32 else chr(b))
    types.append(1)
merges = ["\u0120 t", "h e", "\u0120t he", "l l", "he ll", "o \u0120"]
for m in merges:
    left, right = m.split(" ")
    vocab.append(left + right)
    types.append(1)
V = len(vocab)
H, FF, HEADS, KV_HEADS = 32, 32, 2, 1
HD = H // HEADS

base_kvs = [
    kv("general.architecture", STR, "llama"),
    kv("general.alignment", U32, 32),
    kv("llama.block_count", U32, 1),
    kv("llama.embedding_length", U32, H),
    kv("llama.feed_forward_length", U32, FF),
    kv("llama.attention.head_count", U32, HEADS),
    kv("llama.attention.head_count_kv", U32, KV_HEADS),
    kv("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
    kv("llama.rope.freq_base", F32, 10000.0),
    kv("llama.context_length", U32, 2048),
    kv("tokenizer.ggml.model", STR, "gpt2"),
    kv("tokenizer.ggml.pre", STR, "smollm"),
    kv("tokenizer.ggml.tokens", ARR, (STR, vocab)),
    kv("tokenizer.ggml.token_type", ARR, (I32, types)),
    kv("tokenizer.ggml.merges", ARR, (STR, merges)),
    kv("tokenizer.ggml.bos_token_id", U32, 1),
    kv("tokenizer.ggml.eos_token_id", U32, 2),
    kv("tokenizer.chat_template", STR, "{% for m in messages %}{{ m.content }}{% endfor %}"),
]
layer = [
    ("blk.0.attn_norm.weight", [H], F32T, 1),
    ("blk.0.attn_q.weight", [H, HEADS * HD], Q8_0, 2),
    ("blk.0.attn_k.weight", [H, KV_HEADS * HD], Q4_0, 3),
    ("blk.0.attn_v.weight", [H, KV_HEADS * HD], F16T, 4),
    ("blk.0.attn_output.weight", [HEADS * HD, H], BF16, 5),
    ("blk.0.ffn_norm.weight", [H], F32T, 6),
    ("blk.0.ffn_gate.weight", [H, FF], Q4_1, 7),
    ("blk.0.ffn_up.weight", [H, FF], Q4_0, 8),
    ("blk.0.ffn_down.weight", [FF, H], Q8_0, 9),
]
full = [("token_embd.weight", [H, V], Q4_1, 0), ("output_norm.weight", [H], F32T, 10)] + layer

def write(target, name, data):
    os.makedirs(os.path.join(out, target), exist_ok=True)
    with open(os.path.join(out, target, name), "wb") as f:
        f.write(data)

write("gguf", "tiny_llama", gguf(base_kvs, full))
write("gguf", "tiny_llama_v2_align64", gguf(base_kvs[:1] + [kv("general.alignment", U32, 64)] + base_kvs[2:], full, 64, 2))
write("gguf", "metadata_only", gguf(base_kvs[10:15], []))
write("gguf", "one_tensor_each_type",
      gguf([kv("general.name", STR, "types"), kv("flag", BOOL, 1)],
           [("f32", [8], F32T, 1), ("f16", [8], F16T, 2), ("bf16", [8], BF16, 3), ("q4_0", [32, 2], Q4_0, 4),
            ("q4_1", [64], Q4_1, 5), ("q8_0", [32], Q8_0, 6)]))
write("gguf", "llama3_pre_scaling",
      gguf(base_kvs[:11] + [kv("tokenizer.ggml.pre", STR, "llama-bpe"), kv("llama.rope.scaling.type", STR, "llama3")] +
           base_kvs[12:], full))

# ------------------------------------------------------------ safetensors

def st(tensors, meta=None):
    header, data = {}, b""
    if meta:
        header["__metadata__"] = meta
    for name, shape, dtype, seed in tensors:
        n = 1
        for d in shape:
            n *= d
        if dtype == "F32":
            raw = b"".join(struct.pack("<f", ((seed + i) % 7 - 3) * 0.125) for i in range(n))
        elif dtype == "F16":
            raw = b"".join(struct.pack("<H", 0x3C00 + (seed + i) % 5) for i in range(n))
        elif dtype == "BF16":
            raw = b"".join(struct.pack("<H", 0x3F80 + (seed + i) % 5) for i in range(n))
        else:
            raw = bytes((seed + i) % 256 for i in range(n * {"I8": 1, "I32": 4}[dtype]))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((-len(h)) % 8)
    return struct.pack("<Q", len(h)) + h + data

sV, sH, sFF, sHEADS, sKV = 16, 8, 16, 2, 1
sHD = sH // sHEADS
st_tensors = [
    ("model.embed_tokens.weight", [sV, sH], "F32", 0),
    ("model.norm.weight", [sH], "F32", 1),
    ("model.layers.0.input_layernorm.weight", [sH], "BF16", 2),
    ("model.layers.0.self_attn.q_proj.weight", [sHEADS * sHD, sH], "F16", 3),
    ("model.layers.0.self_attn.k_proj.weight", [sKV * sHD, sH], "F32", 4),
    ("model.layers.0.self_attn.v_proj.weight", [sKV * sHD, sH], "F32", 5),
    ("model.layers.0.self_attn.o_proj.weight", [sH, sHEADS * sHD], "BF16", 6),
    ("model.layers.0.post_attention_layernorm.weight", [sH], "F32", 7),
    ("model.layers.0.mlp.gate_proj.weight", [sFF, sH], "F16", 8),
    ("model.layers.0.mlp.up_proj.weight", [sFF, sH], "F32", 9),
    ("model.layers.0.mlp.down_proj.weight", [sH, sFF], "F32", 10),
]
config = {"model_type": "llama", "vocab_size": sV, "hidden_size": sH, "intermediate_size": sFF,
          "num_hidden_layers": 1, "num_attention_heads": sHEADS, "num_key_value_heads": sKV,
          "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 512,
          "tie_word_embeddings": True}
config_scaled = dict(config, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 256})

def folder(cfg, model):
    c = json.dumps(cfg).encode()
    return b"\x01" + struct.pack("<H", len(c)) + c + model

write("safetensors", "file_all_dtypes", b"\x00" + st([("a", [2, 3], "F32", 1), ("b", [4], "F16", 2), ("c", [2, 2], "BF16", 3),
                                                       ("d", [3], "I8", 4), ("e", [0, 5], "F32", 5), ("s", [], "I32", 6)],
                                                      {"format": "pt"}))
write("safetensors", "file_empty_header", b"\x00" + st([]))
write("safetensors", "folder_tiny_llama", folder(config, st(st_tensors)))
write("safetensors", "folder_tiny_llama_scaled", folder(config_scaled, st(st_tensors + [("lm_head.weight", [sV, sH], "F32", 11)])))

# -------------------------------------------------------------- tokenizer

texts = [
    "Hello, world!",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 12345 + 678?<|im_end|>\n",
    "caf\u00e9 na\u00efve \u20ac100 \u65e5\u672c\u8a9e \U0001F600 \u0928\u092e\u0938\u094d\u0924\u0947",
    "    indented\tcode() {\n  return x[i] >= 0x7f;\n}\n\n\n",
    "don't won't I'm you're they've we'll he'd",
]
for i, t in enumerate(texts):
    write("tokenizer", "encode_%d" % i, b"\x02" + t.encode())
    write("tokenizer", "encode_special_%d" % i, b"\x03" + t.encode())
write("tokenizer", "encode_invalid_utf8", b"\x02" + b"ok \xff\xfe \xc0\x80 \xed\xa0\x80 \xf4\x90\x80\x80 \xe2\x82")
write("tokenizer", "decode_raw_ids", b"\x00" + struct.pack("<8i", 1, 9690, 28, 905, 2, -1, 49152, 2**31 - 1))
write("tokenizer", "decode_in_vocab", b"\x01" + struct.pack("<10H", 1, 2, 3, 100, 1000, 9690, 28, 905, 49151, 49152))
write("tokenizer", "decode_specials", b"\x01" + struct.pack("<6H", 0, 1, 2, 3, 4, 17))

# ------------------------------------------------------------- chunk file
# Byte 0 = 1: the target stamps the header checksum itself.

def chunk_header(layers, kv_heads, tokens, head_dim, dtype, begin, end, count=None):
    h = bytearray(4096)
    struct.pack_into("<II", h, 0, 0x4346564B, 1)
    h[8:40] = bytes(range(32))
    h[40:72] = bytes(range(100, 132))
    struct.pack_into("<IIB", h, 72, begin, end, dtype)
    struct.pack_into("<IIII", h, 84, layers, kv_heads, tokens, head_dim)
    layer_bytes = 2 * kv_heads * tokens * head_dim * (4 if dtype == 0 else 2)
    struct.pack_into("<QQI", h, 104, layer_bytes * (end - begin), 0x1234567890ABCDEF, end - begin if count is None else count)
    for i in range(end - begin):
        struct.pack_into("<Q", h, 128 + 8 * i, 0x1000 + i)
    return b"\x01" + bytes(h[:4088])

write("chunk_file", "smollm2_bf16_all_layers", chunk_header(30, 3, 256, 64, 1, 0, 30))
write("chunk_file", "tiny_f32_layers_1_3", chunk_header(4, 2, 16, 16, 0, 1, 3))
write("chunk_file", "max_layers", chunk_header(495, 1, 1, 2, 0, 0, 495))
write("chunk_file", "bad_count", chunk_header(4, 2, 16, 16, 0, 0, 4, count=3))
write("chunk_file", "unstamped_zero", b"\x00" + bytes(64))
