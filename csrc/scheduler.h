// Continuous batching over one llama_context. A single thread owns the
// context: it admits queued requests into free slots (a slot whose cached
// prefix covers enough of the prompt, else the least recently used one, whose
// state goes to the host-memory prompt cache), packs one decode step per
// generating slot plus prompt chunks of prefilling slots into each
// llama_decode call, samples, and hands text back to the requests. Callers
// only touch the queue and the requests.
#pragma once

#include "lora.h"
#include "profiler.h"
#include "prompt_cache.h"
#include "request.h"
#include "speculative.h"

#include "llama.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace kolosal {

struct SchedulerStats {
    int32_t n_slots = 0;
    int32_t slots_busy = 0;
    int32_t queued = 0;
    uint64_t requests_done = 0;
    uint64_t prompt_tokens = 0;
    uint64_t cached_tokens = 0;
    uint64_t generated_tokens = 0;
    uint64_t decode_calls = 0;
    uint64_t prompt_cache_bytes = 0;        // host memory held by saved sequence states
    uint64_t prompt_cache_entries = 0;
    uint64_t prompt_cache_limit_bytes = 0;  // 0: the cache is off
    uint64_t prompt_cache_saves = 0;
    uint64_t prompt_cache_restores = 0;
    uint64_t kv_purges = 0;                 // idle slots cleared to make room (kv_unified)
    uint64_t paired_ubatch_tokens = 0;      // prompt tokens left for the next step to make ubatches even
    uint64_t spec_draft_tokens = 0;         // tokens proposed by speculative decoding
    uint64_t spec_accepted_tokens = 0;      // of those, the ones the model agreed with
    uint64_t context_shifts = 0;            // slots whose context was shifted to go on generating
    uint64_t decode_aborts = 0;             // decode calls interrupted because all their requests were cancelled
};

// What one slot holds and does now (for llama-server's /slots).
struct SlotState {
    int32_t id = 0;
    bool busy = false;
    uint64_t request_id = 0;         // 0: idle
    size_t n_cached = 0;             // tokens whose KV the slot holds
    size_t n_prompt = 0;             // prompt tokens of its request
    int32_t n_generated = 0;
    bool generating = false;         // false while its prompt is prefilled
    GenParams params;                // its request's parameters (when busy)
};

struct SchedulerOptions {
    // A free slot is reused for its cached prefix only when that prefix covers
    // more than this share of the new prompt; else the least recently used
    // free slot is taken. 0: always the least recently used one.
    float slot_prompt_similarity = 0.1f;
    // Bound of the host-memory prompt cache in bytes; 0: off.
    size_t cache_ram_bytes = 0;
    // All sequences share one pool of KV cells: idle slots are purged when it runs out.
    bool kv_unified = false;
    // The model's LoRA adapters: requests with different scales are decoded in separate batches.
    const LoraSet * lora = nullptr;
    // Speculative decoding: each generating slot's proposal is checked in the same batch (null: off).
    Speculator * spec = nullptr;
    // A generation that fills its slot drops half of what follows the kept
    // prompt tokens (llama-server's context shift) instead of ending.
    bool context_shift = false;
    // Cut prompt chunks so that the ubatches llama.cpp makes of a batch have
    // an even number of tokens where one token less achieves it: ggml uses
    // a kernel that takes two columns at a time (kolosal's Q4_1 kernel,
    // cpu_kernels.h) only for even column counts.
    bool pair_ubatches = false;
};

class Scheduler {
public:
    Scheduler(llama_context * ctx, const llama_model * model, int32_t n_slots, Profiler & profiler,
              SchedulerOptions opts = {});
    ~Scheduler();
    Scheduler(const Scheduler &) = delete;
    Scheduler & operator=(const Scheduler &) = delete;

    // Queues requests together: the scheduler admits them in the same loop turn.
    void submit(std::vector<std::shared_ptr<Request>> reqs);
    // Cancels everything in flight and joins the thread. Returns false, and
    // leaves the thread alone, once fail_all() was called before the thread
    // ended: it may be blocked for good inside llama.cpp (a lost RPC worker),
    // so this Scheduler and its context must then never be freed.
    bool shutdown();
    // From any thread: every queued and running request ends with `err`
    // (finish_reason "error") and later submits fail at once.
    void fail_all(const std::string & err);
    SchedulerStats stats() const;
    // A snapshot of every slot, taken between decode steps.
    std::vector<SlotState> slot_states() const;
    uint32_t n_ctx_slot() const { return n_ctx_slot_; }
    int32_t n_slots() const { return int32_t(slots_.size()); }

private:
    struct Slot;

    void run();
    void step(std::unique_lock<std::mutex> & slots_lock);
    void shutdown_requests();
    void admit_queued();
    Slot * pick_slot(const Request & req, bool & give_away);
    void prepare(Request & req) const;
    void choose_lora();
    bool build_batch();
    void pair_ubatches();
    void unbuild_batch();
    bool make_room();
    bool purge_idle(const Slot * except);
    void process_outputs();
    void sample(Slot & s);
    void take(Slot & s, llama_token tok);
    void make_drafts(std::unique_lock<std::mutex> & slots_lock);
    bool drop_drafts();
    void accept_draft(Slot & s);
    void emit(Slot & s, bool final_flush);
    void finish(Slot & s, Finish f, const std::string & err = {}, const std::string & stop_word = {});
    void fail_batch(const std::string & err);
    bool shift_context(Slot & s);
    bool batch_cancelled() const;
    void drop_cancelled_batch();

    llama_context * ctx_;
    const llama_model * model_;
    const llama_vocab * vocab_;
    Profiler & profiler_;
    uint32_t n_ctx_slot_;
    int32_t n_batch_;
    int32_t n_ubatch_;
    llama_batch batch_;
    std::vector<std::unique_ptr<Slot>> slots_;
    uint64_t tick_ = 0;
    SchedulerOptions opts_;
    std::vector<float> active_lora_;  // the adapter scales of the batch being built
    size_t lora_turn_ = 0;           // the slot whose adapter scales go next when several differ
    PromptCache cache_;

    mutable std::mutex queue_mutex_;
    std::condition_variable queue_cv_;
    std::deque<std::shared_ptr<Request>> queue_;
    bool stopping_ = false;
    // Guarded by queue_mutex_: requests taken into a slot and not yet finished
    // (fail_all reaches them without touching the slots), the failure, and
    // whether run() has returned (shutdown waits for that or for a failure).
    std::vector<std::shared_ptr<Request>> inflight_;
    std::string failure_;
    bool exited_ = false;
    std::condition_variable exit_cv_;
    std::atomic<bool> abort_{false};  // set by shutdown(): the abort callback of the context
    std::atomic<int32_t> slots_busy_{0};

    std::atomic<uint64_t> requests_done_{0}, prompt_tokens_{0}, cached_tokens_{0}, generated_tokens_{0}, decode_calls_{0},
        kv_purges_{0}, context_shifts_{0}, decode_aborts_{0}, paired_ubatch_tokens_{0};
    // The requests with tokens in the batch being decoded: the abort callback
    // stops the decode when every one of them is cancelled.
    std::vector<Request *> batch_reqs_;
    // Guards the slots' bookkeeping that slot_states() reads.
    mutable std::mutex slots_mutex_;
    std::atomic<uint64_t> spec_drafted_{0}, spec_accepted_{0};
    std::thread thread_;
};

}  // namespace kolosal
