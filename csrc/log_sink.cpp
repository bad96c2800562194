#include "log_sink.h"

#include "ggml.h"
#include "llama.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>

namespace kolosal {

namespace {

constexpr size_t kMaxQueued = 10000;  // beyond this the oldest records are dropped

struct Sink {
    std::atomic<int> threshold{GGML_LOG_LEVEL_WARN};
    std::atomic<bool> capture{false};
    std::mutex mutex;
    std::condition_variable cv;
    std::deque<LogRecord> queue;
    int line_level = GGML_LOG_LEVEL_INFO;  // guarded by mutex
    std::string line;                      // the line being assembled, guarded by mutex
};

// Never destroyed: a Python thread may still be waiting on it while the process exits.
Sink & sink() {
    static Sink * s = new Sink();
    return *s;
}

thread_local ErrorCapture * t_capture = nullptr;

}  // namespace

void capture_error_line(const char * text) {
    if (!t_capture) return;
    std::string line(text);
    while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) t_capture->lines_.push_back(std::move(line));
}

ErrorCapture::ErrorCapture() : outer_(t_capture) { t_capture = this; }
ErrorCapture::~ErrorCapture() { t_capture = outer_; }

std::string ErrorCapture::text() const {
    std::string out;
    for (const auto & l : lines_) out += (out.empty() ? "" : "; ") + l;
    return out;
}

namespace {

void log_callback(ggml_log_level level, const char * text, void *) {
    Sink & k = sink();
    if (level == GGML_LOG_LEVEL_ERROR) capture_error_line(text);
    std::unique_lock<std::mutex> lock(k.mutex);
    if (level != GGML_LOG_LEVEL_CONT) k.line_level = level;
    const int lvl = k.line_level;
    if (lvl < k.threshold.load() || lvl == GGML_LOG_LEVEL_NONE) return;
    if (!k.capture.load()) {
        std::fputs(text, stderr);
        std::fflush(stderr);
        return;
    }
    // llama.cpp writes a line in pieces: queue whole lines only.
    k.line += text;
    bool pushed = false;
    for (size_t nl; (nl = k.line.find('\n')) != std::string::npos;) {
        if (nl > 0) {
            k.queue.push_back({lvl, k.line.substr(0, nl)});
            if (k.queue.size() > kMaxQueued) k.queue.pop_front();
            pushed = true;
        }
        k.line.erase(0, nl + 1);
    }
    lock.unlock();
    if (pushed) k.cv.notify_one();
}

}  // namespace

void install_log_callback() {
    llama_log_set(log_callback, nullptr);
}

void set_log_level(int level) {
    sink().threshold.store(level);
    install_log_callback();
}

void set_log_capture(bool capture) {
    sink().capture.store(capture);
    sink().cv.notify_all();
}

std::vector<LogRecord> take_log_records(double timeout_s) {
    Sink & k = sink();
    std::unique_lock<std::mutex> lock(k.mutex);
    // Turning capture off wakes waiters at once (a reader is stopping).
    k.cv.wait_for(lock, std::chrono::duration<double>(timeout_s), [&] { return !k.queue.empty() || !k.capture.load(); });
    std::vector<LogRecord> out(std::make_move_iterator(k.queue.begin()), std::make_move_iterator(k.queue.end()));
    k.queue.clear();
    return out;
}

}  // namespace kolosal
