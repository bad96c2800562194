// Inspects a GGUF file without loading its weights: existence, readability,
// magic, header, completeness, and the numbers needed to predict its cost.
// Every failure is a typed error (errors.h).
#pragma once

#include <cstdint>
#include <string>

namespace kolosal {

struct ModelFileInfo {
    uint64_t file_bytes = 0;
    uint64_t tensor_bytes = 0;
    uint64_t q4_1_bytes = 0;  // of tensors stored as Q4_1
    std::string architecture;
    int64_t n_layer = 0;
    int64_t n_head_kv = 0;
    int64_t head_dim_k = 0;
    int64_t head_dim_v = 0;
};

// Throws ModelNotFoundError, ModelPermissionError, InvalidModelError (directory,
// bad magic, corrupt header, truncated, no architecture) or
// UnsupportedArchitectureError.
ModelFileInfo inspect_model_file(const std::string & path);

}  // namespace kolosal
