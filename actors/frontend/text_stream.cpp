#include "actors/frontend/text_stream.hpp"

#include <algorithm>

namespace kvflow::frontend {

std::size_t incomplete_utf8_tail(const std::string& s) {
  // Look back at most 3 bytes for a lead byte whose sequence runs past the end.
  for (std::size_t back = 1; back <= std::min<std::size_t>(3, s.size()); ++back) {
    auto c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking
    std::size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    return need > back ? back : 0;
  }
  return 0;
}

text_stream::text_stream(decode_fn decode, std::vector<std::string> stop, std::vector<std::int32_t> hidden)
    : decode_(std::move(decode)), stop_(std::move(stop)), hidden_(std::move(hidden)) {}

std::string text_stream::take(std::size_t end) {
  // A decode that rewrote text already shown cannot be taken back: show
  // only what extends it.
  if (end <= shown_.size() || full_.compare(0, shown_.size(), shown_) != 0) return {};
  auto more = full_.substr(shown_.size(), end - shown_.size());
  shown_ += more;
  return more;
}

std::string text_stream::push(std::int32_t token) {
  if (stopped_ || ended_) return {};
  if (std::find(hidden_.begin(), hidden_.end(), token) != hidden_.end()) {
    ended_ = true;
    return {};
  }
  ids_.push_back(token);
  if (!decode_) return {};
  full_ = decode_(ids_);
  // The earliest stop string, searched from where a new one could begin.
  std::size_t longest = 0;
  for (auto& s : stop_) longest = std::max(longest, s.size());
  auto from = shown_.size() > longest ? shown_.size() - longest : 0;
  auto cut = std::string::npos;
  for (auto& s : stop_) cut = std::min(cut, full_.find(s, from));
  if (cut != std::string::npos) {
    stopped_ = true;
    full_.resize(std::max(cut, shown_.size()));
    return take(full_.size());
  }
  // Hold back a tail that could still become a stop string, and half a character.
  auto end = full_.size() - incomplete_utf8_tail(full_);
  std::size_t hold = 0;
  for (auto& s : stop_)
    for (std::size_t k = std::min(s.size() - 1, end); k > hold; --k)
      if (full_.compare(end - k, k, s, 0, k) == 0) {
        hold = k;
        break;
      }
  return take(end - hold);
}

std::string text_stream::finish() {
  ended_ = true;
  return take(full_.size());
}

}  // namespace kvflow::frontend
