// LoRA adapters of one model: loaded with the model, each with a global
// scale (llama-server's POST /lora-adapters) that a request may override
// with its own list. A request's adapter configuration is a scale per
// adapter; llama.cpp applies adapters per context, so the scheduler decodes
// requests with different configurations in separate batches.
#pragma once

#include "llama-cpp.h"
#include "llama.h"

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kolosal {

struct LoraSpec {
    std::string path;
    float scale = 1.0f;
};

struct LoraInfo {
    int32_t id = 0;
    std::string path;
    float scale = 0.0f;  // the global scale
    std::string task_name;
    std::string prompt_prefix;
};

// (adapter id, scale) pairs as a request or POST /lora-adapters gives them.
using LoraRequest = std::vector<std::pair<int32_t, float>>;

class LoraSet {
public:
    // Loads every adapter; a missing file or one made for another model
    // raises a typed load error naming the file and the cause.
    LoraSet(llama_model * model, const std::vector<LoraSpec> & specs);

    size_t size() const { return adapters_.size(); }
    bool empty() const { return adapters_.empty(); }
    std::vector<LoraInfo> list() const;
    // Sets the global scales: listed adapters get their scale, the others 0.
    void set_global(const LoraRequest & req);
    // A request's scales: its own list (unlisted adapters 0), else the global ones.
    std::vector<float> resolve(const std::optional<LoraRequest> & req) const;
    // Makes `scales` the context's adapter configuration (a no-op when it already is).
    void apply(llama_context * ctx, const std::vector<float> & scales) const;

private:
    void check(const LoraRequest & req) const;

    std::vector<llama_adapter_lora_ptr> adapters_;
    std::vector<llama_adapter_lora *> ptrs_;
    std::vector<LoraInfo> info_;
    mutable std::mutex mutex_;  // guards the global scales in info_
};

// Two configurations that give the same output (missing entries count as 0).
bool lora_same(const std::vector<float> & a, const std::vector<float> & b);
// A key for the configuration: 0 for "no adapter active".
uint64_t lora_tag(const std::vector<float> & scales);

}  // namespace kolosal
