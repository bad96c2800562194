// Speculative decoding: proposals of the next tokens of a sequence, which
// the target model then checks in one decode call (the scheduler keeps the
// longest prefix its own sampler agrees with). Two sources:
//  - a draft model (a smaller model with the same vocabulary), run greedily
//    in its own context for up to n_draft tokens while its top token's
//    probability stays at or above p_min;
//  - n-gram prompt lookup (no draft model): the tokens that followed the last
//    n-gram the last time it occurred in the sequence (llama.cpp's
//    ngram-simple), which pays off when the answer copies its input.
// Every slot of the scheduler drafts for its own sequence; the draft model
// keeps one sequence per slot and drafts for all of them in shared decode
// calls. Used by the scheduler thread only.
#pragma once

#include "llama-cpp.h"
#include "llama.h"

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace kolosal {

struct SpecConfig {
    std::string type;             // "" (off), "draft" or "ngram"
    std::string draft_model;      // GGUF of the draft model (type "draft")
    int32_t n_draft = 16;         // most tokens proposed per step
    int32_t n_min = 0;            // fewer proposed tokens than this: decode normally
    float p_min = 0.0f;           // draft model: stop drafting below this probability of its top token
    int32_t ngram_n = 12;         // n-gram lookup: length of the n-gram looked up
    int32_t n_gpu_layers = 0;     // draft model layers on the GPU
    int32_t n_threads = 1;
};

// One sequence to draft for: up to n_max tokens that may follow `history`
// (tokens in the target's KV) and `last` (sampled, not yet decoded).
struct DraftJob {
    int32_t seq = 0;  // the slot (the draft model's sequence)
    const std::vector<llama_token> * history = nullptr;
    llama_token last = 0;
    int32_t n_max = 0;
    std::vector<llama_token> out;  // the proposal; empty: nothing worth checking
};

class Speculator {
public:
    // Loads the draft model (if any) and checks that its vocabulary is the
    // target's; raises a typed load error naming the difference otherwise.
    // The draft context holds n_seq sequences of n_ctx_seq cells each.
    Speculator(const SpecConfig & cfg, const llama_model * target, uint32_t n_ctx_seq, int32_t n_seq);
    Speculator(const Speculator &) = delete;
    Speculator & operator=(const Speculator &) = delete;

    const SpecConfig & config() const { return cfg_; }
    // Fills every job's proposal.
    void draft(std::vector<DraftJob> & jobs);
    // Interrupts a running draft decode (the engine is closing).
    void abort() { abort_ = true; }
    // Runs the draft model on the model's own thread pools (never at the same
    // time as the model: both run on the scheduler thread).
    void attach(ggml_threadpool * tp, ggml_threadpool * tp_batch);

    uint64_t draft_bytes() const;  // memory of the draft model and its context

private:
    void draft_with_model(std::vector<DraftJob *> & jobs);
    void forget_all();

    SpecConfig cfg_;
    llama_model_ptr model_;
    llama_context_ptr ctx_;
    std::vector<std::vector<llama_token>> dft_cache_;  // per sequence: tokens whose KV the draft context holds
    std::atomic<bool> abort_{false};
};

// Why two vocabularies cannot share drafts ("" when they can).
std::string vocab_mismatch(const llama_model * target, const llama_model * draft);

}  // namespace kolosal
