// Typed errors raised by the native core. bindings.cpp maps each one to a
// Python exception class in kolosal.errors; nothing else translates errors.
#pragma once

#include <stdexcept>
#include <string>

namespace kolosal {

struct KolosalError : std::runtime_error {
    using std::runtime_error::runtime_error;
};
struct ModelLoadError : KolosalError { using KolosalError::KolosalError; };
struct ModelNotFoundError : ModelLoadError { using ModelLoadError::ModelLoadError; };
struct InvalidModelError : ModelLoadError { using ModelLoadError::ModelLoadError; };
struct UnsupportedArchitectureError : ModelLoadError { using ModelLoadError::ModelLoadError; };
struct ModelPermissionError : ModelLoadError { using ModelLoadError::ModelLoadError; };
// An RPC worker (rpc_servers) cannot be reached, at load time or later.
struct WorkerUnreachableError : ModelLoadError { using ModelLoadError::ModelLoadError; };
struct OutOfMemoryError : KolosalError { using KolosalError::KolosalError; };
struct ContextOverflowError : KolosalError { using KolosalError::KolosalError; };
struct InvalidParameterError : KolosalError {
    InvalidParameterError(const std::string & param, const std::string & msg)
        : KolosalError(msg), param(param) {}
    std::string param;
};
struct EngineClosedError : KolosalError { using KolosalError::KolosalError; };

}  // namespace kolosal
