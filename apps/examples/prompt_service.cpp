// prompt_service: a small service that embeds kvflow. It reads one prompt per
// line on stdin, submits each as a user turn of a chat through
// kvflow::runtime (the model's chat template applies) and answers each with
// one line on stdout:
//   ttft_ms=<ms> cached_chunks=<n>/<chunks> first_token=<id> text=<reply>
// A prompt that shares a prefix with an earlier one restores that prefix's KV
// from the cache tiers instead of computing it again (cached_chunks > 0).
//
// It needs only <kvflow/runtime.hpp> and <kvflow/error.hpp> and the CMake
// target kvflow::runtime: no CAF, CUDA or Cap'n Proto type reaches it.

#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>

#include <kvflow/error.hpp>
#include <kvflow/runtime.hpp>

namespace {

const char* usage =
    "usage: prompt_service [--model PATH] [--backend cpu|cuda|auto] [--chunk-tokens N] [--max-new-tokens N]\n"
    "Reads one prompt per line on stdin and prints one line per prompt:\n"
    "  ttft_ms=<ms> cached_chunks=<n>/<chunks> first_token=<id> text=<reply>\n"
    "  --model PATH        GGUF or safetensors model (default: kvflow's default model, $KVFLOW_MODEL)\n"
    "  --backend NAME      cpu, cuda or auto (default auto)\n"
    "  --chunk-tokens N    tokens per cached chunk (default 256)\n"
    "  --max-new-tokens N  tokens to generate per prompt (default 8)\n";

int to_positive(const char* flag, const char* text) {
  char* end = nullptr;
  long v = std::strtol(text, &end, 10);
  if (end == text || *end != 0 || v <= 0 || v > 1 << 20) {
    std::cerr << "prompt_service: " << flag << " wants a positive integer, got '" << text << "'\n";
    std::exit(2);
  }
  return static_cast<int>(v);
}

}  // namespace

int main(int argc, char** argv) {
  kvflow::runtime_options opts;
  kvflow::submit_options sub;
  sub.max_new_tokens = 8;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::cout << usage;
      return 0;
    }
    if (i + 1 >= argc) {
      std::cerr << "prompt_service: unknown or incomplete option '" << a << "'\n" << usage;
      return 2;
    }
    const char* v = argv[++i];
    if (a == "--model")
      opts.model_path = v;
    else if (a == "--backend")
      opts.backend = v;
    else if (a == "--chunk-tokens")
      opts.chunk_tokens = to_positive("--chunk-tokens", v);
    else if (a == "--max-new-tokens")
      sub.max_new_tokens = static_cast<std::uint32_t>(to_positive("--max-new-tokens", v));
    else {
      std::cerr << "prompt_service: unknown option '" << a << "'\n" << usage;
      return 2;
    }
  }

  try {
    kvflow::runtime rt(opts);
    std::cerr << "prompt_service: " << rt.describe() << "\n";
    std::string line;
    while (std::getline(std::cin, line)) {
      if (line.empty()) continue;
      auto report = rt.submit_chat({{"user", line}}, sub).get();
      // Later prompts find this one's chunks only once they are stored.
      rt.flush();
      std::string text = report.text;
      for (auto& c : text)
        if (c == '\n') c = ' ';
      std::cout << "ttft_ms=" << report.ttft_s * 1e3 << " cached_chunks=" << report.cached_chunks << "/"
                << report.chunks << " first_token=" << report.first_token << " text=" << text << std::endl;
    }
  } catch (const kvflow::error& e) {
    std::cerr << "prompt_service: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
