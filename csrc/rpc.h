// llama.cpp's RPC backend (ggml-rpc): a worker process lends its CPU to a
// model loaded elsewhere (`python -m kolosal.rpc_worker`), and an engine with
// `rpc_servers` puts layers on those workers.
//
// ggml-rpc has no way to report a lost worker: its connection thread calls
// GGML_ABORT ("Remote RPC server crashed ..."), which ends the process. The
// abort handler installed here turns that into a failure of the engines that
// use the worker (RpcFailureWatch), then parks the aborting thread for good.
#pragma once

#include "ggml-backend.h"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace kolosal {

// One device a model runs on: the local CPU, a local GPU, or a worker's device.
struct DeviceInfo {
    std::string name;         // ggml's name: "CPU", "RPC0", "CUDA0", ...
    std::string kind;         // "cpu", "gpu" or "rpc"
    std::string description;
    std::string endpoint;     // host:port of the worker ("rpc" only)
    uint64_t memory_total = 0;
    uint64_t memory_free = 0; // when the model was loaded
};

// Whether this build has the RPC backend (CMake option USE_RPC).
bool rpc_available();
// The RPC protocol version this build speaks (major, minor, patch); zeros without RPC.
std::vector<int> rpc_protocol_version();

// The devices of the workers at `endpoints` (host:port), in order. The caller
// checked that each one accepts connections: ggml aborts the process when it
// cannot connect. Throws WorkerUnreachableError for a worker this process lost
// earlier (its connection is dead for good: a restart is needed to use it again).
std::vector<ggml_backend_dev_t> rpc_devices(const std::vector<std::string> & endpoints);

// Describes a device (memory as of now: call it at load time only for RPC devices).
DeviceInfo describe_device(ggml_backend_dev_t dev);

// Runs ggml's RPC server with the CPU device on host:port; blocks for good.
// `mem_mib` > 0: the memory the worker reports (else the system's).
// Throws KolosalError when the server cannot start (address in use, ...).
void rpc_serve(const std::string & host, int port, int n_threads, int64_t mem_mib, const std::string & cache_dir);

// A worker found gone without ggml noticing (its connection closed by the
// peer): the engines using it fail now, before anything is sent there (ggml
// would wait for good), and the address is refused until the process ends.
void rpc_mark_lost(const std::vector<std::string> & endpoints, const std::string & what);

// While it lives, a lost worker among `endpoints` calls `on_lost(message)`
// (on ggml's connection thread, which is then parked for good). Destroying it
// waits for a call in progress.
class RpcFailureWatch {
public:
    RpcFailureWatch(std::vector<std::string> endpoints, std::function<void(const std::string &)> on_lost);
    ~RpcFailureWatch();
    RpcFailureWatch(const RpcFailureWatch &) = delete;
    RpcFailureWatch & operator=(const RpcFailureWatch &) = delete;

private:
    uint64_t id_;
};

}  // namespace kolosal
