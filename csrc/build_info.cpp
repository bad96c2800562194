#include "engine.h"

#include "ggml-backend.h"
#include "llama.h"


#ifndef KOLOSAL_LLAMA_CPP_COMMIT
#  define KOLOSAL_LLAMA_CPP_COMMIT "unknown"
#endif

namespace kolosal {

namespace {
void escape_into(std::string & out, const std::string & s) {
    out += '"';
    for (char c : s) {
        if (c == '"' || c == '\\') { out += '\\'; out += c; }
        else if (c == '\n') out += "\\n";
        else if (static_cast<unsigned char>(c) < 0x20) out += ' ';
        else out += c;
    }
    out += '"';
}
}  // namespace

std::string build_info_json() {
    llama_backend_init();
    ggml_backend_load_all();
    std::string out = "{\"llama_cpp_commit\":";
    escape_into(out, KOLOSAL_LLAMA_CPP_COMMIT);
    out += ",\"backends\":[";
    for (size_t i = 0; i < ggml_backend_reg_count(); ++i) {
        if (i) out += ',';
        escape_into(out, ggml_backend_reg_name(ggml_backend_reg_get(i)));
    }
    out += "],\"devices\":[";
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        if (i) out += ',';
        ggml_backend_dev_t d = ggml_backend_dev_get(i);
        out += "{\"name\":";
        escape_into(out, ggml_backend_dev_name(d));
        out += ",\"description\":";
        escape_into(out, ggml_backend_dev_description(d));
        out += '}';
    }
    out += "],\"gpu_offload\":";
    out += llama_supports_gpu_offload() ? "true" : "false";
    out += ",\"mmap\":";
    out += llama_supports_mmap() ? "true" : "false";
    out += ",\"mlock\":";
    out += llama_supports_mlock() ? "true" : "false";
    out += ",\"system_info\":";
    escape_into(out, llama_print_system_info());
    out += '}';
    return out;
}

}  // namespace kolosal
