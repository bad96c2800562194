#include "model_file.h"

#include "errors.h"
#include "gguf.h"
#include "llama-arch.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace kolosal {

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

struct GgufCloser {
    void operator()(gguf_context * g) const { gguf_free(g); }
};

}  // namespace

ModelFileInfo inspect_model_file(const std::string & path) {
    namespace fs = std::filesystem;
    const fs::path fpath = fs::u8path(path);
    std::error_code ec;
    const fs::file_status status = fs::status(fpath, ec);
    if (ec || !fs::exists(status)) {
        if (ec == std::errc::permission_denied) throw ModelPermissionError("permission denied: " + path);
        throw ModelNotFoundError("model file not found: " + path);
    }
    if (fs::is_directory(status)) throw InvalidModelError("model path is a directory, not a GGUF file: " + path);
    ModelFileInfo info;
    info.file_bytes = fs::file_size(fpath, ec);
    if (ec) throw ModelLoadError("cannot read the size of " + path + ": " + ec.message());
    {
        std::ifstream f(fpath, std::ios::binary);
        if (!f) {
            if (errno == EACCES) throw ModelPermissionError("permission denied reading model file: " + path);
            throw ModelLoadError("cannot open model file: " + path + " (" + std::strerror(errno) + ")");
        }
        char magic[4] = {0, 0, 0, 0};
        f.read(magic, 4);
        if (f.gcount() != 4 || std::memcmp(magic, "GGUF", 4) != 0) {
            throw InvalidModelError("not a GGUF file (bad magic bytes): " + path);
        }
    }
    std::unique_ptr<gguf_context, GgufCloser> g(gguf_init_from_file(path.c_str(), {/*no_alloc=*/true, /*ctx=*/nullptr}));
    if (!g) throw InvalidModelError("corrupt GGUF header: " + path);
    uint64_t end = 0;
    for (int64_t i = 0; i < gguf_get_n_tensors(g.get()); ++i) {
        const uint64_t size = gguf_get_tensor_size(g.get(), i);
        info.tensor_bytes += size;
        if (gguf_get_tensor_type(g.get(), i) == GGML_TYPE_Q4_1) info.q4_1_bytes += size;
        end = std::max<uint64_t>(end, gguf_get_tensor_offset(g.get(), i) + size);
    }
    end += gguf_get_data_offset(g.get());
    if (info.file_bytes < end) {
        throw InvalidModelError("truncated GGUF file: " + path + " has " + std::to_string(info.file_bytes) +
                                " bytes, its tensors need " + std::to_string(end));
    }
    const int64_t arch_key = gguf_find_key(g.get(), "general.architecture");
    info.architecture = arch_key >= 0 ? gguf_get_val_str(g.get(), arch_key) : "";
    if (info.architecture.empty()) throw InvalidModelError("GGUF file has no general.architecture: " + path);
    if (llm_arch_from_string(info.architecture) == LLM_ARCH_UNKNOWN) {
        throw UnsupportedArchitectureError("unsupported model architecture '" + info.architecture + "' in " + path);
    }
    const std::string & a = info.architecture;
    info.n_layer = gguf_int(g.get(), a + ".block_count", 0);
    const int64_t n_embd = gguf_int(g.get(), a + ".embedding_length", 0);
    const int64_t n_head = gguf_int(g.get(), a + ".attention.head_count", 1);
    info.n_head_kv = gguf_int(g.get(), a + ".attention.head_count_kv", n_head);
    const int64_t head_dim = n_head > 0 ? n_embd / n_head : 0;
    info.head_dim_k = gguf_int(g.get(), a + ".attention.key_length", head_dim);
    info.head_dim_v = gguf_int(g.get(), a + ".attention.value_length", head_dim);
    return info;
}

}  // namespace kolosal
