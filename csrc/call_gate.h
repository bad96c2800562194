// Lets calls into an object run while it is open and lets its closer wait
// for them: once close() is called no new call gets in (EngineClosedError)
// and wait_idle() returns when the last call in flight has left.
#pragma once

#include "errors.h"

#include <chrono>
#include <condition_variable>
#include <mutex>

namespace kolosal {

class CallGate {
public:
    // Held for the duration of one call.
    class Pass {
    public:
        explicit Pass(CallGate & g) : gate_(&g) {}
        Pass(Pass && o) noexcept : gate_(o.gate_) { o.gate_ = nullptr; }
        Pass(const Pass &) = delete;
        Pass & operator=(const Pass &) = delete;
        Pass & operator=(Pass &&) = delete;
        ~Pass() {
            if (gate_) gate_->leave();
        }

    private:
        CallGate * gate_;
    };

    // Throws EngineClosedError once the gate is closed.
    Pass enter(const char * what = "engine is closed") {
        std::lock_guard<std::mutex> lock(mutex_);
        if (closed_) throw EngineClosedError(what);
        ++active_;
        return Pass(*this);
    }

    // Refuses every later call. Returns false if it was closed already.
    bool close() {
        std::lock_guard<std::mutex> lock(mutex_);
        const bool was_open = !closed_;
        closed_ = true;
        return was_open;
    }

    bool closed() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return closed_;
    }

    // Waits up to `d` for no call to be in flight; true if none is.
    bool wait_idle_for(std::chrono::milliseconds d) {
        std::unique_lock<std::mutex> lock(mutex_);
        return idle_.wait_for(lock, d, [&] { return active_ == 0; });
    }

    // Blocks until no call is in flight.
    void wait_idle() {
        std::unique_lock<std::mutex> lock(mutex_);
        idle_.wait(lock, [&] { return active_ == 0; });
    }

private:
    void leave() {
        std::lock_guard<std::mutex> lock(mutex_);
        if (--active_ == 0) idle_.notify_all();
    }

    mutable std::mutex mutex_;
    std::condition_variable idle_;
    int active_ = 0;
    bool closed_ = false;
};

}  // namespace kolosal
