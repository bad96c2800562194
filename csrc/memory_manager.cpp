#include "memory_manager.h"

#include "errors.h"
#include "gguf.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <filesystem>

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

uint64_t kv_cache_bytes(int64_t n_layer, int64_t n_head_kv, int64_t head_dim_k, int64_t head_dim_v, uint64_t n_ctx) {
    const uint64_t per_cell = uint64_t(n_layer) * uint64_t(n_head_kv) * uint64_t(head_dim_k + head_dim_v) * 2;  // F16
    return per_cell * n_ctx;
}

namespace {
int64_t gguf_int(const gguf_context * g, const std::string & key, int64_t fallback) {
    const int64_t id = gguf_find_key(g, key.c_str());
    if (id < 0) return fallback;
    switch (gguf_get_kv_type(g, id)) {
        case GGUF_TYPE_UINT32: return gguf_get_val_u32(g, id);
        case GGUF_TYPE_INT32: return gguf_get_val_i32(g, id);
        case GGUF_TYPE_UINT64: return int64_t(gguf_get_val_u64(g, id));
        case GGUF_TYPE_INT64: return gguf_get_val_i64(g, id);
        case GGUF_TYPE_ARRAY: {
            // Per-layer arrays (e.g. head_count_kv on some models): take the maximum.
            if (gguf_get_arr_type(g, id) != GGUF_TYPE_INT32 && gguf_get_arr_type(g, id) != GGUF_TYPE_UINT32) return fallback;
            const auto * data = static_cast<const int32_t *>(gguf_get_arr_data(g, id));
            int64_t best = 0;
            for (size_t i = 0; i < gguf_get_arr_n(g, id); ++i) best = std::max<int64_t>(best, data[i]);
            return best;
        }
        default: return fallback;
    }
}
}  // namespace

FootprintEstimate MemoryManager::estimate(const std::string & path, uint32_t n_ctx, int n_gpu_layers) {
    FootprintEstimate e;
    std::error_code ec;
    e.file_bytes = std::filesystem::file_size(std::filesystem::u8path(path), ec);
    if (ec) throw ModelNotFoundError("model file not found: " + path);
    gguf_init_params params{/*no_alloc=*/true, /*ctx=*/nullptr};
    gguf_context * g = gguf_init_from_file(path.c_str(), params);
    if (!g) throw InvalidModelError("not a readable GGUF file: " + path);
    const int64_t arch_id = gguf_find_key(g, "general.architecture");
    e.architecture = arch_id >= 0 ? gguf_get_val_str(g, arch_id) : "";
    uint64_t tensor_bytes = 0;
    for (int64_t i = 0; i < gguf_get_n_tensors(g); ++i) tensor_bytes += gguf_get_tensor_size(g, i);
    const std::string a = e.architecture;
    e.n_layer = gguf_int(g, a + ".block_count", 0);
    const int64_t n_embd = gguf_int(g, a + ".embedding_length", 0);
    const int64_t n_head = gguf_int(g, a + ".attention.head_count", 1);
    const int64_t n_head_kv = gguf_int(g, a + ".attention.head_count_kv", n_head);
    const int64_t head_dim = n_head > 0 ? n_embd / n_head : 0;
    const int64_t dk = gguf_int(g, a + ".attention.key_length", head_dim);
    const int64_t dv = gguf_int(g, a + ".attention.value_length", head_dim);
    gguf_free(g);
    // Layers offloaded to a GPU do not cost host memory; report host + device together here.
    (void) n_gpu_layers;
    e.weights_bytes = tensor_bytes;
    e.kv_bytes = kv_cache_bytes(e.n_layer, n_head_kv, dk, dv, n_ctx);
    e.total_bytes = e.weights_bytes + e.kv_bytes;
    return e;
}

}  // namespace kolosal
