// How far a model load has come: llama.cpp's progress callback writes it on
// the loading thread, any thread reads it without a lock (and without the GIL).
#pragma once

#include <atomic>
#include <cstdint>

namespace kolosal {

struct LoadProgress {
    std::atomic<float> value{0.0f};       // 0..1: share of the weights read
    std::atomic<uint32_t> updates{0};     // how many times llama.cpp reported

    // llama_model_params::progress_callback. Never calls into Python; true: go on loading.
    static bool callback(float progress, void * user_data) {
        auto * self = static_cast<LoadProgress *>(user_data);
        self->value.store(progress, std::memory_order_relaxed);
        self->updates.fetch_add(1, std::memory_order_relaxed);
        return true;
    }
};

}  // namespace kolosal
