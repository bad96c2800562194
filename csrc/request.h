// A generation request: what the caller submitted and the stream of results
// the scheduler thread hands back. The caller waits on `cv` (GIL released).
#pragma once

#include "sampling_params.h"

#include "sampling.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <algorithm>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

namespace kolosal {

// `text` is the token's piece as raw bytes (a byte-level token may hold part
// of a UTF-8 character).
struct TopLogprob {
    int32_t token;
    std::string text;
    float logprob;
};

struct TokenLogprob {
    int32_t token;
    std::string text;
    float logprob;
    std::vector<TopLogprob> top;
};

struct Chunk {
    std::string text;
    std::vector<int32_t> tokens;
    std::vector<TokenLogprob> logprobs;
};

enum class Finish { none, stop, length, cancelled, error };

inline const char * finish_name(Finish f) {
    switch (f) {
        case Finish::stop: return "stop";
        case Finish::length: return "length";
        case Finish::cancelled: return "cancelled";
        case Finish::error: return "error";
        default: return "";
    }
}

struct Usage {
    int32_t prompt_tokens = 0;
    int32_t cached_tokens = 0;
    int32_t completion_tokens = 0;
    int32_t draft_tokens = 0;     // tokens proposed by speculative decoding
    int32_t draft_accepted = 0;   // of those, the ones the model agreed with
    double queue_ms = 0.0;
    double ttft_ms = 0.0;
    double prompt_ms = 0.0;
    double decode_ms = 0.0;
    int32_t slot = -1;
    int32_t context_shifts = 0;  // times the slot's context was shifted to make room (context_shift)
};

struct Request {
    using clock = std::chrono::steady_clock;

    uint64_t id = 0;
    std::vector<int32_t> prompt;
    GenParams params;
    common_sampler * sampler = nullptr;  // created on submit, freed by the scheduler (or with the request)
    std::vector<int32_t> preserved;      // sorted control tokens whose text is returned (template's preserved_tokens)
    std::vector<float> lora;             // scale of each of the model's LoRA adapters for this request
    std::atomic<bool> cancelled{false};
    clock::time_point t_submit = clock::now();

    // Results, guarded by `mutex`.
    std::mutex mutex;
    std::condition_variable cv;
    std::deque<Chunk> chunks;
    bool done = false;
    Finish finish = Finish::none;
    std::string error;
    std::string stop_word;  // the stop string that ended generation, if any
    Usage usage;

    Request() = default;
    Request(const Request &) = delete;
    Request & operator=(const Request &) = delete;
    ~Request() {
        if (sampler) common_sampler_free(sampler);
    }

    bool is_preserved(int32_t tok) const { return std::binary_search(preserved.begin(), preserved.end(), tok); }

    void push(Chunk c) {
        {
            std::lock_guard<std::mutex> lock(mutex);
            chunks.push_back(std::move(c));
        }
        cv.notify_all();
    }
    void finish_with(Finish f, const Usage & u, std::string err = {}, std::string stop = {}) {
        {
            std::lock_guard<std::mutex> lock(mutex);
            if (done) return;
            done = true;
            finish = f;
            usage = u;
            error = std::move(err);
            stop_word = std::move(stop);
        }
        cv.notify_all();
    }
};

}  // namespace kolosal
