#pragma once
// Traces in the mooncake_trace JSONL format (one request per line):
//   {"timestamp": 27482, "input_length": 6955, "output_length": 52,
//    "hash_ids": [46, 47, 48, ...], "session_id": "s1"}
// timestamp in ms since the trace's start; each hash id names one block of
// `block_tokens` (512 in Mooncake's traces) prompt tokens, and prompts that
// list the same ids in the same places share that prefix; session_id is
// optional. Prompts are rebuilt from the hash ids deterministically.

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace kvflow::load {

/// One request of a trace.
struct trace_entry {
  double timestamp_ms = 0;
  int input_length = 0;
  int output_length = 0;
  std::vector<std::uint64_t> hash_ids;
  std::string session_id;  ///< empty when the line has none
  int line = 0;            ///< 1-based line in its file, for messages
};

/// Parses one JSONL line. Throws kvflow::error(invalid_argument) naming
/// `where` (e.g. "trace.jsonl:12") and the field that is wrong: not JSON, a
/// missing or negative timestamp, input_length or output_length, hash_ids
/// that are not non-negative integers, a session_id that is not a string or
/// an integer.
trace_entry parse_trace_line(const std::string& line, const std::string& where);

/// Reads a whole trace; blank lines and lines starting with '#' are skipped.
/// Entries come back sorted by timestamp (stable). Throws kvflow::error with
/// file:line on the first bad line, io_failure when the file cannot be read,
/// invalid_argument when it has no entries.
std::vector<trace_entry> read_trace(const std::string& path);

/// The prompt of an entry as token ids: block i is block_tokens(hash_ids[i]),
/// the last block cut so the total is input_length. Blocks beyond the listed
/// hash ids (a trace whose ids cover fewer tokens) are unique to the entry:
/// keyed by `salt` (the entry's index).
std::vector<std::int32_t> trace_prompt_tokens(const trace_entry& e, int block_tokens, int vocab, std::uint64_t salt);

/// The same prompt as words (about one token each), blocks joined by spaces.
std::string trace_prompt_text(const trace_entry& e, int block_tokens, std::uint64_t salt);

}  // namespace kvflow::load
