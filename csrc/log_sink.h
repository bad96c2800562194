// llama.cpp / ggml log output: filtered by level, then either written to
// stderr (default) or queued for Python to take (set_log_capture), so that
// no native thread ever calls into Python.
#pragma once

#include <string>
#include <vector>

namespace kolosal {

struct LogRecord {
    int level;  // ggml_log_level: 1 debug, 2 info, 3 warn, 4 error
    std::string text;
};

void install_log_callback();
void set_log_level(int level);
void set_log_capture(bool capture);
// Waits up to `timeout_s` for at least one record; returns what is queued.
std::vector<LogRecord> take_log_records(double timeout_s);

// While alive, the error lines llama.cpp logs on this thread are also kept
// (e.g. why an adapter file was refused), whatever the log settings.
class ErrorCapture {
public:
    ErrorCapture();
    ~ErrorCapture();
    ErrorCapture(const ErrorCapture &) = delete;
    ErrorCapture & operator=(const ErrorCapture &) = delete;
    std::string text() const;  // the captured lines, "; "-joined

private:
    std::vector<std::string> lines_;
    ErrorCapture * outer_;
    friend void capture_error_line(const char * text);
};

}  // namespace kolosal
