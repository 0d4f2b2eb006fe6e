#include "kernels/model/chat_template.hpp"

#include "messages/error.hpp"

namespace kvflow::model {
namespace {

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n";
  auto b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  auto e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

void check_roles(const std::vector<chat_message>& messages) {
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const auto& r = messages[i].role;
    if (r != "system" && r != "user" && r != "assistant" && r != "tool")
      throw error(errc::invalid_argument, "chat message " + std::to_string(i) + ": unknown role '" + r + "'");
  }
}

}  // namespace

chat_style detect_chat_style(const std::string& tpl) {
  if (tpl.empty() || tpl.find("<|im_start|>") != std::string::npos) return chat_style::chatml;
  if (tpl.find("<|start_header_id|>") != std::string::npos) return chat_style::llama3;
  if (tpl.find("[INST]") != std::string::npos) return chat_style::llama2;
  throw error(errc::unsupported,
              "chat template: none of the known markers (<|im_start|>, <|start_header_id|>, [INST])");
}

std::string default_system_prompt(const std::string& tpl) {
  // A ChatML template that writes a literal system turn when the first
  // message is not a system one, e.g. SmolLM2's
  //   {% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n...<|im_end|>\n' }}
  static const std::string open = "<|im_start|>system\n";
  auto b = tpl.find(open);
  if (b == std::string::npos) return "";
  b += open.size();
  auto e = tpl.find("<|im_end|>", b);
  if (e == std::string::npos) return "";
  std::string text = tpl.substr(b, e - b);
  // Only a plain literal counts; an expression means the template builds it.
  if (text.find_first_of("'\"{}+") != std::string::npos) return "";
  return text;
}

std::string apply_chat_template(const std::string& tpl, const std::vector<chat_message>& messages,
                                bool add_generation_prompt) {
  check_roles(messages);
  std::string out;
  switch (detect_chat_style(tpl)) {
    case chat_style::chatml: {
      bool has_system = !messages.empty() && messages[0].role == "system";
      auto def = default_system_prompt(tpl);
      if (!has_system && !def.empty() && !messages.empty()) out += "<|im_start|>system\n" + def + "<|im_end|>\n";
      for (const auto& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      if (add_generation_prompt) out += "<|im_start|>assistant\n";
      return out;
    }
    case chat_style::llama3: {
      out += "<|begin_of_text|>";
      for (const auto& m : messages)
        out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + trim(m.content) + "<|eot_id|>";
      if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
      return out;
    }
    case chat_style::llama2: {
      // <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s>
      std::string system;
      std::size_t i = 0;
      if (!messages.empty() && messages[0].role == "system") system = trim(messages[i++].content);
      bool first_user = true;
      for (; i < messages.size(); ++i) {
        const auto& m = messages[i];
        if (m.role == "assistant") {
          out += " " + trim(m.content) + " </s>";
          continue;
        }
        std::string content = trim(m.content);
        out += "<s>[INST] ";
        if (first_user && !system.empty()) out.append("<<SYS>>\n").append(system).append("\n<</SYS>>\n\n");
        first_user = false;
        out.append(content).append(" [/INST]");
      }
      return out;
    }
  }
  return out;
}

}  // namespace kvflow::model
