#include "rpc.h"

#include "cpu_kernels.h"
#include "errors.h"

#include "common.h"
#include "ggml-backend-impl.h"
#include "ggml.h"
#include "llama.h"

#ifdef KOLOSAL_USE_RPC
#  include "ggml-rpc.h"
#endif

#ifndef _WIN32
#  include <errno.h>
#  include <fcntl.h>
#  include <netdb.h>
#  include <poll.h>
#  include <sys/socket.h>
#  include <unistd.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>

// ggml's own (ggml-impl.h): what its default abort prints after the message.
extern "C" void ggml_print_backtrace(void);

namespace kolosal {

namespace {

constexpr const char * kLostMessage = "Remote RPC server crashed";

struct Watch {
    std::vector<std::string> endpoints;
    std::function<void(const std::string &)> on_lost;
};

// Guards the watches and the lost endpoints; held while a loss is handled.
std::mutex g_mutex;
std::map<uint64_t, Watch> g_watches;
uint64_t g_next_watch = 1;
std::set<std::string> g_lost;  // endpoints whose connection died: ggml keeps it, dead, for good

// Whether a TCP connection to host:port opens within `timeout_ms`.
#ifdef _WIN32
bool reachable(const std::string &, int) {
    return false;  // not probed here: every worker in use counts as lost
}
#else
bool reachable(const std::string & endpoint, int timeout_ms) {
    const size_t colon = endpoint.rfind(':');
    if (colon == std::string::npos) return false;
    const std::string host = endpoint.substr(0, colon), port = endpoint.substr(colon + 1);
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo * res = nullptr;
    if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || !res) return false;
    bool ok = false;
    const int fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
    if (fd >= 0) {
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK);
        int rc = connect(fd, res->ai_addr, res->ai_addrlen);
        if (rc == 0) {
            ok = true;
        } else if (errno == EINPROGRESS) {
            pollfd p{fd, POLLOUT, 0};
            if (poll(&p, 1, timeout_ms) == 1) {
                int err = 0;
                socklen_t len = sizeof(err);
                ok = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
            }
        }
        close(fd);
    }
    freeaddrinfo(res);
    return ok;
}
#endif

// Records `lost` as lost for good and fails every engine using one of them.
// Called with g_mutex held.
void fail_engines(const std::vector<std::string> & lost, const std::string & what) {
    for (const auto & e : lost) g_lost.insert(e);
    std::string names;
    for (const auto & e : lost) names += (names.empty() ? "" : ", ") + e;
    const std::string why = "worker_unreachable: the RPC worker " + names + " " + what +
                            "; the engine using it has failed and can use that worker again after a server restart";
    std::fprintf(stderr, "kolosal: %s\n", why.c_str());
    for (auto & [id, w] : g_watches) {
        bool hit = false;
        for (const auto & e : w.endpoints) hit |= std::find(lost.begin(), lost.end(), e) != lost.end();
        if (hit) w.on_lost(why);
    }
}

// ggml's abort hook. A lost worker fails the engines using it and parks this
// thread (ggml's connection thread: returning would abort the process, and
// nothing it was sending can complete). Any other abort: ggml's default.
void on_abort(const char * message) {
    if (message && std::strstr(message, kLostMessage)) {
        std::unique_lock<std::mutex> lock(g_mutex);
        if (!g_watches.empty()) {
            // The message does not say which worker: the ones that no longer accept connections.
            std::set<std::string> in_use;
            for (const auto & [id, w] : g_watches) in_use.insert(w.endpoints.begin(), w.endpoints.end());
            std::vector<std::string> lost;
            for (const auto & e : in_use) {
                if (g_lost.count(e) || !reachable(e, 1000)) lost.push_back(e);
            }
            if (lost.empty()) lost.assign(in_use.begin(), in_use.end());  // cannot tell: every one is suspect
            fail_engines(lost, "stopped answering (crashed, killed or cut off)");
            lock.unlock();
            // Never return into ggml: this thread and what it holds stay until the process ends.
            for (;;) std::this_thread::sleep_for(std::chrono::hours(24));
        }
    }
    // ggml's default: the message and a backtrace, then abort().
    std::fprintf(stderr, "%s\n", message ? message : "ggml abort");
    ggml_print_backtrace();
}

void install_abort_handler() {
    static std::once_flag once;
    std::call_once(once, [] { ggml_set_abort_callback(&on_abort); });
}

#ifdef KOLOSAL_USE_RPC
// A CPU device that reports `g_worker_mem` bytes (rpc_worker --mem).
uint64_t g_worker_mem = 0;
ggml_backend_dev_t g_worker_cpu = nullptr;

void worker_get_memory(ggml_backend_dev_t, size_t * free, size_t * total) {
    *free = size_t(g_worker_mem);
    *total = size_t(g_worker_mem);
}

void worker_get_props(ggml_backend_dev_t dev, ggml_backend_dev_props * props) {
    g_worker_cpu->iface.get_props(dev, props);
    props->memory_free = size_t(g_worker_mem);
    props->memory_total = size_t(g_worker_mem);
}

// The server asks the backend for its device when a client asks for memory.
ggml_backend_t worker_init_backend(ggml_backend_dev_t dev, const char * params) {
    ggml_backend_t backend = g_worker_cpu->iface.init_backend(g_worker_cpu, params);
    if (backend) backend->device = dev;
    return backend;
}
#endif

}  // namespace

bool rpc_available() {
#ifdef KOLOSAL_USE_RPC
    return true;
#else
    return false;
#endif
}

std::vector<int> rpc_protocol_version() {
#ifdef KOLOSAL_USE_RPC
    return {RPC_PROTO_MAJOR_VERSION, RPC_PROTO_MINOR_VERSION, RPC_PROTO_PATCH_VERSION};
#else
    return {0, 0, 0};
#endif
}

std::vector<ggml_backend_dev_t> rpc_devices(const std::vector<std::string> & endpoints) {
#ifdef KOLOSAL_USE_RPC
    install_abort_handler();
    {
        std::lock_guard<std::mutex> lock(g_mutex);
        for (const auto & e : endpoints) {
            if (g_lost.count(e)) {
                throw WorkerUnreachableError("the RPC worker " + e +
                                             " was lost earlier in this process; restart the server to use it again");
            }
        }
    }
    std::vector<ggml_backend_dev_t> devs;
    for (const auto & e : endpoints) {
        ggml_backend_reg_t reg = ggml_backend_rpc_add_server(e.c_str());
        if (!reg || ggml_backend_reg_dev_count(reg) == 0) {
            throw WorkerUnreachableError("the RPC worker " + e + " offers no device");
        }
        for (size_t i = 0; i < ggml_backend_reg_dev_count(reg); ++i) devs.push_back(ggml_backend_reg_dev_get(reg, i));
    }
    return devs;
#else
    (void)endpoints;
    throw InvalidParameterError("rpc_servers", "this build has no RPC backend (build with -DUSE_RPC=ON)");
#endif
}

DeviceInfo describe_device(ggml_backend_dev_t dev) {
    DeviceInfo d;
    d.name = ggml_backend_dev_name(dev);
    d.description = ggml_backend_dev_description(dev);
    const ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(dev);
    const bool rpc = reg && std::string(ggml_backend_reg_name(reg)).rfind("RPC", 0) == 0;
    if (rpc) {
        d.kind = "rpc";
        d.endpoint = d.description;  // ggml names a worker's device after its endpoint
    } else {
        d.kind = ggml_backend_dev_type(dev) == GGML_BACKEND_DEVICE_TYPE_CPU ? "cpu" : "gpu";
    }
    size_t free = 0, total = 0;
    ggml_backend_dev_memory(dev, &free, &total);
    d.memory_free = free;
    d.memory_total = total;
    return d;
}

void rpc_serve(const std::string & host, int port, int n_threads, int64_t mem_mib, const std::string & cache_dir) {
#ifdef KOLOSAL_USE_RPC
    llama_backend_init();
    ggml_backend_load_all();
    cpu_kernels::install();
    ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (!cpu) throw KolosalError("no CPU device");
    ggml_backend_dev_t dev = cpu;
    if (mem_mib > 0) {
        // The same device, reporting the memory given: clients size their layer split by it.
        g_worker_mem = uint64_t(mem_mib) << 20;
        g_worker_cpu = cpu;
        auto * limited = new ggml_backend_device{cpu->iface, cpu->reg, cpu->context};
        limited->iface.get_memory = &worker_get_memory;
        limited->iface.get_props = &worker_get_props;
        limited->iface.init_backend = &worker_init_backend;
        dev = limited;
    }
    const int threads = n_threads > 0 ? n_threads : common_cpu_get_num_math();
    const std::string endpoint = host + ":" + std::to_string(port);
    std::fflush(stdout);
    ggml_backend_rpc_start_server(endpoint.c_str(), cache_dir.empty() ? nullptr : cache_dir.c_str(), size_t(threads), 1,
                                  &dev);
    std::fflush(stdout);
    // It returns only when it could not start.
    throw KolosalError("the RPC server could not listen on " + endpoint + " (address in use or not local?)");
#else
    (void)host, (void)port, (void)n_threads, (void)mem_mib, (void)cache_dir;
    throw KolosalError("this build has no RPC backend (build with -DUSE_RPC=ON)");
#endif
}

void rpc_mark_lost(const std::vector<std::string> & endpoints, const std::string & what) {
    std::lock_guard<std::mutex> lock(g_mutex);
    fail_engines(endpoints, what);
}

RpcFailureWatch::RpcFailureWatch(std::vector<std::string> endpoints, std::function<void(const std::string &)> on_lost) {
    install_abort_handler();
    std::lock_guard<std::mutex> lock(g_mutex);
    id_ = g_next_watch++;
    g_watches[id_] = Watch{std::move(endpoints), std::move(on_lost)};
}

RpcFailureWatch::~RpcFailureWatch() {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_watches.erase(id_);
}

}  // namespace kolosal
