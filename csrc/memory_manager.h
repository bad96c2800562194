// Process-wide view of memory: every loaded engine registers its weights and
// KV bytes here; process and system figures come from the OS.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace kolosal {

struct ModelMemory {
    uint64_t handle = 0;      // registration id
    std::string model_id;
    std::string path;
    uint64_t weights_bytes = 0;
    uint64_t kv_bytes = 0;
    uint64_t compute_bytes = 0;
    uint64_t total() const { return weights_bytes + kv_bytes + compute_bytes; }
};

struct SystemMemory {
    uint64_t total_bytes = 0;
    uint64_t available_bytes = 0;
    uint64_t used_bytes = 0;
};

struct ProcessMemory {
    uint64_t rss_bytes = 0;
    uint64_t peak_rss_bytes = 0;
};

struct FootprintEstimate {
    uint64_t file_bytes = 0;
    uint64_t weights_bytes = 0;
    uint64_t kv_bytes = 0;
    uint64_t total_bytes = 0;
    std::string architecture;
    int64_t n_layer = 0;
};

class MemoryManager {
public:
    static MemoryManager & instance();

    uint64_t add(ModelMemory m);
    void remove(uint64_t handle);
    std::vector<ModelMemory> models() const;
    uint64_t models_bytes() const;

    static SystemMemory system();
    static ProcessMemory process();
    // Reads the GGUF header only (no weights) to predict what loading costs.
    static FootprintEstimate estimate(const std::string & path, uint32_t n_ctx, int n_gpu_layers,
                                      const std::string & cache_type_k = "f16", const std::string & cache_type_v = "f16");

private:
    mutable std::mutex mutex_;
    std::vector<ModelMemory> models_;
    uint64_t next_handle_ = 1;
};

// KV cache bytes for `n_ctx` cells with K and V stored as `type_k` / `type_v`
// (ggml types: F16 by default, a quantized type packs blocks of values).
uint64_t kv_cache_bytes(int64_t n_layer, int64_t n_head_kv, int64_t head_dim_k, int64_t head_dim_v, uint64_t n_ctx,
                        int type_k = 1 /* GGML_TYPE_F16 */, int type_v = 1);

// The ggml type of a KV cache type name as llama.cpp spells it (f32, f16,
// bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1); throws InvalidParameterError
// naming `param` for any other.
int kv_cache_type(const std::string & name, const char * param);

}  // namespace kolosal
