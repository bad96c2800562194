#include "profiler.h"

#include "errors.h"

namespace kolosal {

void Profiler::start(const std::string & name) {
    std::lock_guard<std::mutex> lock(mutex_);
    running_[{name, std::this_thread::get_id()}] = clock::now();
}

double Profiler::stop(const std::string & name) {
    const auto now = clock::now();
    clock::time_point t0;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = running_.find({name, std::this_thread::get_id()});
        if (it == running_.end()) {
            throw InvalidParameterError("name", "timer '" + name + "' was not started");
        }
        t0 = it->second;
        running_.erase(it);
    }
    const double ms = std::chrono::duration<double, std::milli>(now - t0).count();
    record(name, ms);
    return ms;
}

void Profiler::record(const std::string & name, double ms) {
    std::lock_guard<std::mutex> lock(mutex_);
    TimerStats & s = stats_[name];
    if (s.count == 0 || ms < s.min_ms) s.min_ms = ms;
    if (s.count == 0 || ms > s.max_ms) s.max_ms = ms;
    s.count++;
    s.total_ms += ms;
}

std::map<std::string, TimerStats> Profiler::stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
}

void Profiler::reset() {
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.clear();
    running_.clear();
}

}  // namespace kolosal
