#pragma once
// Turns generated tokens into text as they arrive: what is safe to show now
// (never half a UTF-8 character, never the start of a stop string that may
// still complete), and where a stop string ends the reply. Pure.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace kvflow::frontend {

class text_stream {
 public:
  using decode_fn = std::function<std::string(const std::vector<std::int32_t>&)>;

  /// `decode` maps token ids to text (empty: a model without a tokenizer,
  /// whose replies are token ids only); `stop` strings end the reply and are
  /// not shown; `hidden` ids (end-of-turn) end it and are not shown either.
  text_stream(decode_fn decode, std::vector<std::string> stop, std::vector<std::int32_t> hidden);

  /// Adds a generated token and returns the text newly safe to show. After
  /// stopped(), further tokens are ignored (decoding overshoots by a step).
  std::string push(std::int32_t token);
  /// The rest of the text once no token follows (held-back bytes included).
  std::string finish();

  /// A stop string appeared: the caller ends the request.
  bool stopped() const { return stopped_; }
  /// Text shown so far.
  const std::string& text() const { return shown_; }
  /// Tokens of the reply: those pushed up to the stop, hidden ones left out.
  const std::vector<std::int32_t>& tokens() const { return ids_; }

 private:
  std::string take(std::size_t end);

  decode_fn decode_;
  std::vector<std::string> stop_;
  std::vector<std::int32_t> hidden_;
  std::vector<std::int32_t> ids_;
  std::string full_;  // decode of ids_
  std::string shown_;
  bool stopped_ = false;
  bool ended_ = false;
};

/// Bytes at the end of `s` that start a UTF-8 character not yet complete.
std::size_t incomplete_utf8_tail(const std::string& s);

}  // namespace kvflow::frontend
