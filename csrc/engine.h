// One loaded GGUF model: weights, a generation context driven by the
// Scheduler, an optional embedding context, tokenizer and chat template.
#pragma once

#include "memory_manager.h"
#include "profiler.h"
#include "request.h"
#include "scheduler.h"

#include "chat.h"
#include "llama.h"

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace kolosal {

struct EngineConfig {
    std::string model_path;
    std::string model_id;
    uint32_t n_ctx = 4096;
    int32_t n_parallel = 4;
    int32_t n_batch = 2048;
    int32_t n_ubatch = 512;
    int32_t n_threads = 0;        // 0: one per physical core
    int32_t n_threads_batch = 0;  // 0: same as n_threads
    int32_t n_gpu_layers = 0;
    int32_t main_gpu = 0;
    std::vector<float> tensor_split;
    bool use_mmap = true;
    bool use_mlock = false;
    bool embeddings = false;      // create the embedding context at load time
    std::optional<uint32_t> seed;
    std::string flash_attn = "auto";  // auto | on | off
    bool kv_unified = false;
    std::string chat_template;    // override of the model's template (Jinja source or a built-in name)
};

struct ModelInfo {
    std::string architecture;
    std::string description;
    std::string name;
    uint64_t n_params = 0;
    uint64_t size_bytes = 0;
    int32_t n_ctx_train = 0;
    int32_t n_vocab = 0;
    int32_t n_embd = 0;
    int32_t n_layer = 0;
    std::string chat_template;
    bool chat_template_fallback = false;
    uint32_t n_ctx = 0;
    uint32_t n_ctx_slot = 0;
    int32_t n_parallel = 0;
    int32_t n_threads = 0;
    int32_t n_gpu_layers = 0;
    uint64_t kv_bytes = 0;
    bool has_encoder = false;
};

// A chat rendered by the model's template, and what parsing its answer needs.
struct ChatPrompt {
    std::string prompt;
    common_chat_params params;
    bool parse_tool_calls = false;
};

struct ChatResult {
    std::string content;
    std::string reasoning_content;
    std::string tool_calls_json;  // JSON array in OpenAI's shape
};

class Engine {
public:
    explicit Engine(EngineConfig cfg);
    ~Engine();
    Engine(const Engine &) = delete;
    Engine & operator=(const Engine &) = delete;

    void close();
    bool closed() const { return closed_; }

    const ModelInfo & info() const { return info_; }
    const EngineConfig & config() const { return cfg_; }
    Profiler & profiler() { return profiler_; }
    SchedulerStats stats() const;

    std::vector<int32_t> tokenize(const std::string & text, bool add_special, bool parse_special);
    std::string detokenize(const std::vector<int32_t> & tokens, bool special) const;
    std::string token_to_piece(int32_t token, bool special) const;

    // Validates, builds the sampler (grammar errors surface here), queues.
    std::shared_ptr<Request> submit(std::vector<int32_t> prompt, GenParams params);
    // Several prompts with the same parameters, queued at once (prefilled together).
    std::vector<std::shared_ptr<Request>> submit_many(std::vector<std::vector<int32_t>> prompts, const GenParams & params);

    ChatPrompt apply_chat_template(const std::string & messages_json, const std::string & tools_json,
                                   const std::string & tool_choice, bool parallel_tool_calls,
                                   bool add_generation_prompt, const std::string & json_schema,
                                   const std::string & grammar);
    std::map<std::string, bool> chat_template_caps() const;
    ChatResult parse_chat_output(const std::string & text, const ChatPrompt & cp) const;

    std::vector<std::vector<float>> embed(const std::vector<std::string> & texts, bool normalize);

private:
    std::shared_ptr<Request> make_request(std::vector<int32_t> prompt, GenParams params);
    void ensure_open() const;
    void init_embedding_context();

    EngineConfig cfg_;
    ModelInfo info_;
    Profiler profiler_;
    llama_model * model_ = nullptr;
    llama_context * ctx_ = nullptr;
    struct ggml_threadpool * threadpool_ = nullptr;
    struct ggml_threadpool * threadpool_batch_ = nullptr;
    const llama_vocab * vocab_ = nullptr;
    std::unique_ptr<Scheduler> scheduler_;
    common_chat_templates_ptr templates_;
    uint64_t mem_handle_ = 0;
    uint32_t seed_ = 0;
    std::atomic<uint64_t> next_request_id_{1};
    std::atomic<bool> closed_{false};

    std::mutex embd_mutex_;
    llama_context * embd_ctx_ = nullptr;
};

std::string build_info_json();

}  // namespace kolosal
