// One loaded GGUF model: weights, a generation context driven by the
// Scheduler, an optional embedding context, tokenizer and chat template.
#pragma once

#include "call_gate.h"
#include "lora.h"
#include "speculative.h"
#include "load_progress.h"
#include "memory_manager.h"
#include "profiler.h"
#include "request.h"
#include "rpc.h"
#include "scheduler.h"

#include "chat.h"
#include "ggml-cpu.h"
#include "llama-cpp.h"
#include "llama.h"

#include <atomic>
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
    bool huge_pages = true;       // transparent huge pages for the large CPU buffers (Linux; csrc/huge_pages.h)
    bool pair_ubatches = true;    // prompt chunks cut to even ubatches where kolosal's Q4_1 kernel is used
    bool embeddings = false;      // create the embedding context at load time
    std::optional<uint32_t> seed;
    std::string flash_attn = "auto";  // auto | on | off
    bool kv_unified = false;
    std::string chat_template;    // override of the model's template (Jinja source or a built-in name)
    float slot_prompt_similarity = 0.1f;  // share of a prompt a slot's cached prefix must cover to be reused (0: LRU only)
    int64_t cache_ram_mib = 2048;         // host-memory prompt cache bound in MiB; 0: off, -1: unbounded
    std::vector<LoraSpec> lora;           // LoRA adapters and their global scales
    SpecConfig spec;                      // speculative decoding (type "": off)
    std::string cache_type_k = "f16";     // KV cache element types (llama.cpp's names: f16, q8_0, q4_0, ...)
    std::string cache_type_v = "f16";     // a quantized V cache needs flash attention
    bool context_shift = false;           // a full slot drops half its context after n_keep instead of ending
    std::vector<std::string> rpc_servers;  // host:port of RPC workers that take the layers (kolosal.rpc_worker)
    std::shared_ptr<LoadProgress> progress;  // fed by llama.cpp while the weights load (optional)
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
    std::string cache_type_k;
    std::string cache_type_v;
    bool context_shift = false;   // on, and the model's cache can shift
    bool use_mmap = true;         // the weights are mapped from the file (else read into memory)
    bool huge_pages = false;      // large CPU buffers were given huge pages
    bool pair_ubatches = false;   // prompt chunks cut for kolosal's Q4_1 kernel (SchedulerOptions)
};

// A chat rendered by the model's template, and what parsing its answer needs.
struct ChatPrompt {
    std::string prompt;
    common_chat_params params;
    bool parse_tool_calls = false;
    bool extract_reasoning = false;  // the answer's think block is read into reasoning_content
};

// How a chat is rendered beyond its messages (llama-server's request fields).
struct ChatTemplateOptions {
    std::string reasoning_format = "auto";  // none | deepseek | auto
    bool enable_thinking = true;
    std::string chat_template_kwargs_json;  // JSON object of extra template variables
};

struct ChatResult {
    std::string content;
    std::string reasoning_content;
    std::string tool_calls_json;  // JSON array in OpenAI's shape
};

// The handles below free themselves, so a constructor that throws half-way
// leaks nothing.
struct ThreadpoolDeleter {
    void operator()(ggml_threadpool * tp) const { ggml_threadpool_free(tp); }
};
using ThreadpoolPtr = std::unique_ptr<ggml_threadpool, ThreadpoolDeleter>;

// The engine's entry in the MemoryManager, removed when it goes.
class MemoryRegistration {
public:
    MemoryRegistration() = default;
    explicit MemoryRegistration(const ModelMemory & m) : handle_(MemoryManager::instance().add(m)) {}
    MemoryRegistration(const MemoryRegistration &) = delete;
    MemoryRegistration & operator=(const MemoryRegistration &) = delete;
    MemoryRegistration & operator=(MemoryRegistration && o) noexcept {
        std::swap(handle_, o.handle_);
        return *this;
    }
    ~MemoryRegistration() { reset(); }
    void reset() {
        if (handle_) MemoryManager::instance().remove(handle_);
        handle_ = 0;
    }

private:
    uint64_t handle_ = 0;
};

// Every public method may run on any thread, also while another thread
// closes the engine: calls in flight finish first (a running embedding is
// interrupted), later ones raise EngineClosedError.
class Engine {
public:
    explicit Engine(EngineConfig cfg);
    ~Engine();
    Engine(const Engine &) = delete;
    Engine & operator=(const Engine &) = delete;

    // Cancels generations in flight, interrupts a running decode, waits for
    // the calls in flight and frees the model. A second call waits for the first.
    void close();
    bool closed() const { return closed_; }
    // Non-empty once the engine failed for good (a lost RPC worker): requests
    // fail, and close() leaves its thread and memory alone (abandoned()).
    std::string failure() const;
    // The engine may not be deleted: its scheduler thread may be blocked for
    // good inside llama.cpp; what it uses stays allocated until the process ends.
    bool abandoned() const { return abandoned_; }
    // The devices the model runs on: the local CPU first, then the workers (memory as at load time).
    const std::vector<DeviceInfo> & devices() const { return devices_; }

    const ModelInfo & info() const { return info_; }
    const EngineConfig & config() const { return cfg_; }
    Profiler & profiler() { return profiler_; }
    SchedulerStats stats() const;
    std::vector<SlotState> slot_states() const;

    std::vector<int32_t> tokenize(const std::string & text, bool add_special, bool parse_special);
    std::string detokenize(const std::vector<int32_t> & tokens, bool special) const;
    std::string token_to_piece(int32_t token, bool special) const;

    // Validates, builds the sampler (grammar errors surface here), queues.
    // `lora`: the request's adapter scales by id (unlisted: 0); none: the global scales.
    std::shared_ptr<Request> submit(std::vector<int32_t> prompt, GenParams params,
                                    const std::optional<LoraRequest> & lora = std::nullopt);
    // Several prompts with the same parameters, queued at once (prefilled together).
    std::vector<std::shared_ptr<Request>> submit_many(std::vector<std::vector<int32_t>> prompts, const GenParams & params,
                                                      const std::optional<LoraRequest> & lora = std::nullopt);

    // The LoRA adapters with their global scales; setting them affects later requests without their own list.
    std::vector<LoraInfo> lora_adapters() const;
    void set_lora_adapters(const LoraRequest & scales);

    ChatPrompt apply_chat_template(const std::string & messages_json, const std::string & tools_json,
                                   const std::string & tool_choice, bool parallel_tool_calls,
                                   bool add_generation_prompt, const std::string & json_schema,
                                   const std::string & grammar, const ChatTemplateOptions & opts = {});
    std::map<std::string, bool> chat_template_caps() const;
    // With ``partial`` the text is a prefix of the answer (streaming): a tool
    // call being written comes back with the arguments generated so far.
    ChatResult parse_chat_output(const std::string & text, const ChatPrompt & cp, bool partial = false) const;

    std::vector<std::vector<float>> embed(const std::vector<std::string> & texts, bool normalize);

    // Floats in one pooled output of the embedding context: n_cls_out for a
    // rank-pooling (reranker) head, otherwise the embedding width.
    static int32_t pooled_size(enum llama_pooling_type pooling, int32_t n_cls_out, int32_t n_embd_out, int32_t n_embd);

private:
    std::shared_ptr<Request> make_request(std::vector<int32_t> prompt, GenParams params,
                                          const std::optional<LoraRequest> & lora);
    CallGate::Pass enter() const { return gate_.enter(); }
    void init_embedding_context();
    static bool abort_embedding(void * engine);
    void lose_worker(const std::string & why);

    EngineConfig cfg_;
    ModelInfo info_;
    Profiler profiler_;
    mutable CallGate gate_;
    std::atomic<bool> closed_{false};
    std::atomic<bool> abort_embedding_{false};
    std::mutex close_mutex_;
    std::vector<DeviceInfo> devices_;
    mutable std::mutex fail_mutex_;  // guards failure_ and sched_ for lose_worker()
    std::string failure_;
    std::atomic<bool> failed_{false};
    std::atomic<bool> abandoned_{false};
    Scheduler * sched_ = nullptr;     // scheduler_ while its thread may run
    // Before the model: a worker lost while anything is freed still fails the engine.
    std::unique_ptr<RpcFailureWatch> rpc_watch_;

    // Declared in the order they are made: they are destroyed in reverse.
    llama_model_ptr model_;
    const llama_vocab * vocab_ = nullptr;
    ThreadpoolPtr threadpool_;
    ThreadpoolPtr threadpool_batch_;
    llama_context_ptr ctx_;
    common_chat_templates_ptr templates_;
    std::mutex embd_mutex_;
    llama_context_ptr embd_ctx_;
    std::unique_ptr<LoraSet> lora_;
    std::unique_ptr<Speculator> spec_;
    MemoryRegistration mem_;
    std::unique_ptr<Scheduler> scheduler_;

    uint32_t seed_ = 0;
    std::atomic<uint64_t> next_request_id_{1};
};

std::string build_info_json();

}  // namespace kolosal
