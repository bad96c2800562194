#include "memory_manager.h"

#include "errors.h"
#include "model_file.h"

#include "ggml.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#ifdef _WIN32
#  define WIN32_LEAN_AND_MEAN
#  include <windows.h>
#  include <psapi.h>
#else
#  include <sys/resource.h>
#  include <unistd.h>
#endif

namespace kolosal {

MemoryManager & MemoryManager::instance() {
    static MemoryManager mm;
    return mm;
}

uint64_t MemoryManager::add(ModelMemory m) {
    std::lock_guard<std::mutex> lock(mutex_);
    m.handle = next_handle_++;
    models_.push_back(m);
    return m.handle;
}

void MemoryManager::remove(uint64_t handle) {
    std::lock_guard<std::mutex> lock(mutex_);
    models_.erase(std::remove_if(models_.begin(), models_.end(),
                                 [&](const ModelMemory & m) { return m.handle == handle; }),
                  models_.end());
}

std::vector<ModelMemory> MemoryManager::models() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return models_;
}

uint64_t MemoryManager::models_bytes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    uint64_t sum = 0;
    for (const auto & m : models_) sum += m.total();
    return sum;
}

SystemMemory MemoryManager::system() {
    SystemMemory s;
#ifdef _WIN32
    MEMORYSTATUSEX st{};
    st.dwLength = sizeof(st);
    if (GlobalMemoryStatusEx(&st)) {
        s.total_bytes = st.ullTotalPhys;
        s.available_bytes = st.ullAvailPhys;
    }
#else
    std::ifstream f("/proc/meminfo");
    std::string key;
    uint64_t value = 0;
    std::string unit;
    while (f >> key >> value) {
        std::getline(f, unit);
        if (key == "MemTotal:") s.total_bytes = value * 1024;
        else if (key == "MemAvailable:") s.available_bytes = value * 1024;
    }
    if (s.total_bytes == 0) {
        const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
        if (pages > 0 && page > 0) s.total_bytes = uint64_t(pages) * uint64_t(page);
    }
#endif
    s.used_bytes = s.total_bytes > s.available_bytes ? s.total_bytes - s.available_bytes : 0;
    return s;
}

ProcessMemory MemoryManager::process() {
    ProcessMemory p;
#ifdef _WIN32
    PROCESS_MEMORY_COUNTERS pmc{};
    if (GetProcessMemoryInfo(GetCurrentProcess(), &pmc, sizeof(pmc))) {
        p.rss_bytes = pmc.WorkingSetSize;
        p.peak_rss_bytes = pmc.PeakWorkingSetSize;
    }
#else
    std::ifstream f("/proc/self/statm");
    uint64_t size = 0, resident = 0;
    if (f >> size >> resident) p.rss_bytes = resident * uint64_t(sysconf(_SC_PAGE_SIZE));
    struct rusage ru{};
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
#  ifdef __APPLE__
        p.peak_rss_bytes = uint64_t(ru.ru_maxrss);
#  else
        p.peak_rss_bytes = uint64_t(ru.ru_maxrss) * 1024;
#  endif
    }
#endif
    return p;
}

uint64_t kv_cache_bytes(int64_t n_layer, int64_t n_head_kv, int64_t head_dim_k, int64_t head_dim_v, uint64_t n_ctx,
                        int type_k, int type_v) {
    // One row of K and one of V per layer and cell; a quantized row is whole blocks.
    const uint64_t k_row = ggml_row_size(ggml_type(type_k), n_head_kv * head_dim_k);
    const uint64_t v_row = ggml_row_size(ggml_type(type_v), n_head_kv * head_dim_v);
    return uint64_t(n_layer) * (k_row + v_row) * n_ctx;
}

int kv_cache_type(const std::string & name, const char * param) {
    static const ggml_type types[] = {GGML_TYPE_F32,  GGML_TYPE_F16,    GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0,
                                      GGML_TYPE_Q4_1, GGML_TYPE_IQ4_NL, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1};
    std::string known;
    for (const ggml_type t : types) {
        if (name == ggml_type_name(t)) return int(t);
        known += (known.empty() ? "" : ", ") + std::string(ggml_type_name(t));
    }
    throw InvalidParameterError(param, std::string("invalid '") + param + "': unknown KV cache type '" + name + "' (known: " + known + ")");
}

FootprintEstimate MemoryManager::estimate(const std::string & path, uint32_t n_ctx, int n_gpu_layers,
                                          const std::string & cache_type_k, const std::string & cache_type_v) {
    const int type_k = kv_cache_type(cache_type_k, "cache_type_k");
    const int type_v = kv_cache_type(cache_type_v, "cache_type_v");
    const ModelFileInfo info = inspect_model_file(path);
    FootprintEstimate e;
    e.file_bytes = info.file_bytes;
    e.architecture = info.architecture;
    e.n_layer = info.n_layer;
    // Layers offloaded to a GPU do not cost host memory; host and device are reported together here.
    (void) n_gpu_layers;
    e.weights_bytes = info.tensor_bytes;
    e.kv_bytes = kv_cache_bytes(info.n_layer, info.n_head_kv, info.head_dim_k, info.head_dim_v, n_ctx, type_k, type_v);
    e.total_bytes = e.weights_bytes + e.kv_bytes;
    return e;
}

}  // namespace kolosal
