#pragma once
// Chat prompt formatting for the template families kvflow serves: ChatML
// (SmolLM2, Qwen), llama-3 and llama-2, detected from the model's Jinja
// template text by its markers (no Jinja interpreter).

#include <string>
#include <vector>

namespace kvflow::model {

class tokenizer;

struct chat_message {
  std::string role;  ///< "system", "user" or "assistant"
  std::string content;
};

enum class chat_style { chatml, llama3, llama2 };

/// The style of a Jinja chat template, by its markers; ChatML when the
/// template is empty. Throws kvflow::error(unsupported) for templates with
/// none of the known markers.
chat_style detect_chat_style(const std::string& jinja_template);

/// The default system prompt a template inserts when the messages have none
/// (SmolLM2's "You are a helpful AI assistant named SmolLM, ..."), or "".
std::string default_system_prompt(const std::string& jinja_template);

/// The prompt text for `messages` as the model's template renders it; with
/// add_generation_prompt the assistant header follows. Throws
/// kvflow::error(invalid_argument) for an unknown role.
std::string apply_chat_template(const std::string& jinja_template, const std::vector<chat_message>& messages,
                                bool add_generation_prompt);

}  // namespace kvflow::model
