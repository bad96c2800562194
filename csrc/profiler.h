// Named wall-clock timers: start/stop pairs or directly recorded durations,
// with count, total, min, max and mean per name. Thread-safe.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

namespace kolosal {

struct TimerStats {
    uint64_t count = 0;
    double total_ms = 0.0;
    double min_ms = 0.0;
    double max_ms = 0.0;
    double mean_ms() const { return count ? total_ms / double(count) : 0.0; }
};

class Profiler {
public:
    using clock = std::chrono::steady_clock;

    void start(const std::string & name);
    // Returns the elapsed milliseconds; throws InvalidParameterError if `name` was not started.
    double stop(const std::string & name);
    void record(const std::string & name, double ms);
    std::map<std::string, TimerStats> stats() const;
    void reset();

private:
    mutable std::mutex mutex_;
    std::map<std::string, TimerStats> stats_;
    // Keyed by name and thread so concurrent callers do not clobber each other.
    std::map<std::pair<std::string, std::thread::id>, clock::time_point> running_;
};

// Records the lifetime of a scope under `name`.
class ScopedTimer {
public:
    ScopedTimer(Profiler & p, const char * name) : p_(p), name_(name), t0_(Profiler::clock::now()) {}
    ~ScopedTimer() {
        p_.record(name_, std::chrono::duration<double, std::milli>(Profiler::clock::now() - t0_).count());
    }
private:
    Profiler & p_;
    const char * name_;
    Profiler::clock::time_point t0_;
};

}  // namespace kolosal
