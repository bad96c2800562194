#include "scheduler.h"

#include "common.h"
#include "sampling.h"
#include "utf8.h"
#include "batch.h"

#include <algorithm>
#include <cmath>
#include <iterator>

namespace kolosal {

namespace {
double ms_between(Request::clock::time_point a, Request::clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}
}  // namespace

struct Scheduler::Slot {
    int32_t id = 0;
    std::shared_ptr<Request> req;
    std::vector<llama_token> cache;  // tokens whose KV is in this sequence
    std::vector<float> lora;         // the LoRA scales that KV was computed with
    size_t n_prompt_done = 0;        // prompt tokens already in `cache` or in the batch
    bool generating = false;
    int32_t i_batch = -1;            // row of this slot's logits in the current batch
    int32_t n_batch_tokens = 0;      // tokens this slot put in the current batch
    std::vector<llama_token> draft;  // speculative decoding: proposed tokens after last_token, checked in this batch
    std::vector<int32_t> i_draft;    // rows of last_token's and the proposals' logits in the batch
    llama_token last_token = 0;
    int32_t n_generated = 0;
    std::string pending;             // generated text not yet handed out
    Chunk pending_chunk;             // tokens/logprobs not yet handed out
    std::vector<size_t> pending_starts;  // where each token of `pending_chunk` starts in `pending`
    uint64_t last_used = 0;
    Usage usage;
    Request::clock::time_point t_start, t_first;
};

Scheduler::Scheduler(llama_context * ctx, const llama_model * model, int32_t n_slots, Profiler & profiler,
                     SchedulerOptions opts)
    : ctx_(ctx), model_(model), vocab_(llama_model_get_vocab(model)), profiler_(profiler), opts_(opts),
      cache_(opts.cache_ram_bytes) {
    n_ctx_slot_ = llama_n_ctx_seq(ctx);
    n_batch_ = int32_t(llama_n_batch(ctx));
    n_ubatch_ = int32_t(llama_n_ubatch(ctx));
    batch_ = llama_batch_init(std::max(n_batch_, n_slots), 0, 1);
    for (int32_t i = 0; i < n_slots; ++i) {
        auto s = std::make_unique<Slot>();
        s->id = i;
        slots_.push_back(std::move(s));
    }
    // shutdown() interrupts a decode in progress (checked between graph nodes),
    // and so does cancelling every request that has tokens in it.
    llama_set_abort_callback(ctx_, [](void * self) {
        auto * sch = static_cast<Scheduler *>(self);
        return sch->abort_.load() || sch->batch_cancelled();
    }, this);
    if (opts_.context_shift && !llama_memory_can_shift(llama_get_memory(ctx_))) opts_.context_shift = false;
    thread_ = std::thread([this] { run(); });
}

Scheduler::~Scheduler() {
    shutdown();
    llama_batch_free(batch_);
}

void Scheduler::prepare(Request & req) const {
    // Penalties see the prompt too, as in llama-server (prompt tokens are not generated: the grammar skips them).
    const GenParams & p = req.params;
    const bool penalties = p.repeat_last_n != 0 &&
                           (p.repeat_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f);
    const bool dry = p.dry_multiplier > 0.0f && p.dry_penalty_last_n != 0;
    if (req.sampler && (penalties || dry)) {
        for (int32_t t : req.prompt) common_sampler_accept(req.sampler, t, false);
    }
    // Control tokens the chat format's parser needs keep their text.
    req.preserved.clear();
    for (const auto & t : p.preserved_tokens) {
        const auto ids = common_tokenize(vocab_, t, false, true);
        if (ids.size() == 1) req.preserved.push_back(ids[0]);
    }
    std::sort(req.preserved.begin(), req.preserved.end());
}

void Scheduler::submit(std::vector<std::shared_ptr<Request>> reqs) {
    for (auto & req : reqs) prepare(*req);
    {
        std::lock_guard<std::mutex> lock(queue_mutex_);
        for (auto & req : reqs) {
            if (stopping_ || !failure_.empty()) {
                if (req->sampler) common_sampler_free(req->sampler);
                req->sampler = nullptr;
                if (failure_.empty()) {
                    req->finish_with(Finish::cancelled, req->usage, "engine is closed");
                } else {
                    req->finish_with(Finish::error, req->usage, failure_);
                }
                continue;
            }
            queue_.push_back(std::move(req));
        }
    }
    queue_cv_.notify_one();
}

bool Scheduler::shutdown() {
    {
        std::lock_guard<std::mutex> lock(queue_mutex_);
        if (stopping_ && !thread_.joinable()) return exited_ || failure_.empty();
        stopping_ = true;
    }
    abort_ = true;
    queue_cv_.notify_all();
    if (!thread_.joinable()) return true;
    {
        std::unique_lock<std::mutex> lock(queue_mutex_);
        exit_cv_.wait(lock, [&] { return exited_ || !failure_.empty(); });
        if (!exited_) return false;
    }
    thread_.join();
    return true;
}

void Scheduler::fail_all(const std::string & err) {
    std::vector<std::shared_ptr<Request>> reqs;
    {
        std::lock_guard<std::mutex> lock(queue_mutex_);
        if (failure_.empty()) failure_ = err.empty() ? std::string("engine failed") : err;
        reqs.assign(inflight_.begin(), inflight_.end());
        reqs.insert(reqs.end(), queue_.begin(), queue_.end());
        queue_.clear();
    }
    // The scheduler thread may still hold these: finish_with() is idempotent
    // and locked, and their samplers are left to their owners.
    for (auto & r : reqs) {
        Usage u;
        u.prompt_tokens = int32_t(r->prompt.size());
        r->finish_with(Finish::error, u, failure_);
    }
    exit_cv_.notify_all();
    queue_cv_.notify_all();
}

SchedulerStats Scheduler::stats() const {
    SchedulerStats st;
    st.n_slots = int32_t(slots_.size());
    st.slots_busy = slots_busy_.load();
    {
        std::lock_guard<std::mutex> lock(queue_mutex_);
        st.queued = int32_t(queue_.size());
    }
    st.requests_done = requests_done_.load();
    st.prompt_tokens = prompt_tokens_.load();
    st.cached_tokens = cached_tokens_.load();
    st.generated_tokens = generated_tokens_.load();
    st.decode_calls = decode_calls_.load();
    st.prompt_cache_bytes = cache_.bytes();
    st.prompt_cache_entries = cache_.entries();
    st.prompt_cache_limit_bytes = cache_.limit_bytes();
    st.prompt_cache_saves = cache_.saves();
    st.prompt_cache_restores = cache_.restores();
    st.kv_purges = kv_purges_.load();
    st.paired_ubatch_tokens = paired_ubatch_tokens_.load();
    st.spec_draft_tokens = spec_drafted_.load();
    st.spec_accepted_tokens = spec_accepted_.load();
    st.context_shifts = context_shifts_.load();
    st.decode_aborts = decode_aborts_.load();
    return st;
}

std::vector<SlotState> Scheduler::slot_states() const {
    std::lock_guard<std::mutex> lock(slots_mutex_);
    std::vector<SlotState> out;
    for (const auto & s : slots_) {
        SlotState st;
        st.id = s->id;
        st.busy = s->req != nullptr;
        st.n_cached = s->cache.size();
        if (s->req) {
            st.request_id = s->req->id;
            st.n_prompt = s->req->prompt.size();
            st.n_generated = s->n_generated;
            st.generating = s->generating;
            st.params = s->req->params;
        }
        out.push_back(st);
    }
    return out;
}

bool Scheduler::batch_cancelled() const {
    if (batch_reqs_.empty()) return false;
    for (const Request * r : batch_reqs_) {
        if (!r->cancelled.load()) return false;
    }
    return true;
}

void Scheduler::drop_cancelled_batch() {
    // The decode stopped part-way: the cells of this batch's tokens may or may
    // not hold them, so each sequence keeps only what its slot knows it holds.
    llama_memory_t mem = llama_get_memory(ctx_);
    for (auto & s : slots_) {
        if (!s->req || s->n_batch_tokens == 0) continue;
        llama_memory_seq_rm(mem, s->id, llama_pos(s->cache.size()), -1);
    }
    unbuild_batch();
    for (auto & s : slots_) {
        if (s->req && s->req->cancelled.load()) finish(*s, Finish::cancelled);
    }
}

void Scheduler::run() {
    for (;;) {
        {
            std::unique_lock<std::mutex> lock(queue_mutex_);
            queue_cv_.wait(lock, [&] {
                if (stopping_ || slots_busy_.load() > 0) return true;
                return !queue_.empty();
            });
            if (stopping_) break;
        }
        try {
            std::unique_lock<std::mutex> slots_lock(slots_mutex_);
            step(slots_lock);
        } catch (const std::exception & e) {
            // Last resort: whatever failed, the requests in flight fail and the engine lives on.
            std::lock_guard<std::mutex> slots_lock(slots_mutex_);
            for (auto & s : slots_) {
                if (s->req) finish(*s, Finish::error, std::string("internal error: ") + e.what());
            }
        }
    }
    {
        std::lock_guard<std::mutex> slots_lock(slots_mutex_);
        shutdown_requests();
    }
    {
        std::lock_guard<std::mutex> lock(queue_mutex_);
        exited_ = true;
    }
    exit_cv_.notify_all();
}

void Scheduler::step(std::unique_lock<std::mutex> & slots_lock) {
    admit_queued();
    // Cancelled requests leave before the next decode step.
    for (auto & s : slots_) {
        if (s->req && s->req->cancelled.load()) finish(*s, Finish::cancelled);
    }
    choose_lora();
    make_drafts(slots_lock);
    if (!build_batch()) return;
    if (opts_.lora && !opts_.lora->empty()) opts_.lora->apply(ctx_, active_lora_);
    for (;;) {
        int32_t ret = -1;
        batch_reqs_.clear();
        for (auto & s : slots_) {
            if (s->req && s->n_batch_tokens > 0) batch_reqs_.push_back(s->req.get());
        }
        try {
            bool has_prompt = false;
            for (auto & s : slots_) has_prompt |= (s->req && s->n_batch_tokens > 0 && !s->generating);
            ScopedTimer t(profiler_, has_prompt ? "prefill" : "decode");
            // The slots are not touched while the context decodes: slot_states() may read them.
            slots_lock.unlock();
            ret = llama_decode(ctx_, batch_);
            slots_lock.lock();
        } catch (const std::exception & e) {
            if (!slots_lock.owns_lock()) slots_lock.lock();
            batch_reqs_.clear();
            fail_batch(std::string("decode failed: ") + e.what());
            return;
        }
        const bool all_cancelled = batch_cancelled();
        batch_reqs_.clear();
        if (ret == 0) break;
        if (ret == 2 && abort_) return;  // interrupted by shutdown(): shutdown_requests() cancels what was in flight
        if (ret == 2 && all_cancelled) {
            // Every request in the batch was cancelled while it ran (e.g. during a long prefill).
            decode_aborts_++;
            drop_cancelled_batch();
            return;
        }
        // 1: no room in the KV cache for this batch; nothing of it was decoded.
        if (ret == 1) {
            if (make_room()) continue;
            return;
        }
        fail_batch("llama_decode failed with status " + std::to_string(ret));
        return;
    }
    decode_calls_++;
    process_outputs();
}

bool Scheduler::purge_idle(const Slot * except) {
    // The least recently used idle slot holding cells; its state goes to the host cache when that is on.
    Slot * idle = nullptr;
    for (auto & s : slots_) {
        if (s->req || s->cache.empty() || s.get() == except) continue;
        if (!idle || s->last_used < idle->last_used) idle = s.get();
    }
    if (!idle) return false;
    cache_.save(ctx_, idle->id, idle->cache, lora_tag(idle->lora));
    llama_memory_seq_rm(llama_get_memory(ctx_), idle->id, -1, -1);
    idle->cache.clear();
    kv_purges_++;
    return true;
}

bool Scheduler::make_room() {
    // Every sequence draws on one pool of cells: the idle slots' cached prompts go first,
    // then the proposals (the batch goes without them) before any request is stopped.
    if (opts_.kv_unified && purge_idle(nullptr)) return true;
    if (drop_drafts()) return true;
    // The requests in flight need more cells than there are: the one holding
    // the most fails alone and the others go on.
    Slot * victim = nullptr;
    size_t victim_cells = 0;
    for (auto & s : slots_) {
        if (!s->req) continue;
        const size_t cells = s->cache.size() + size_t(s->n_batch_tokens);
        if (!victim || cells > victim_cells) {
            victim = s.get();
            victim_cells = cells;
        }
    }
    if (!victim) return false;
    unbuild_batch();
    const uint32_t n_ctx = llama_n_ctx(ctx_);
    finish(*victim, Finish::error,
           "the KV cache is full: the requests in flight need more than its " + std::to_string(n_ctx) + " cells" +
               (opts_.kv_unified ? " (shared by all slots with kv_unified)" : "") + "; this request held the most (" +
               std::to_string(victim_cells) + " tokens) and was stopped");
    return build_batch();
}

void Scheduler::shutdown_requests() {
    // Shutting down: nothing in flight survives the engine.
    for (auto & s : slots_) {
        if (s->req) finish(*s, Finish::cancelled, "engine closed");
    }
    std::deque<std::shared_ptr<Request>> rest;
    {
        std::lock_guard<std::mutex> lock(queue_mutex_);
        rest.swap(queue_);
    }
    for (auto & r : rest) {
        if (r->sampler) common_sampler_free(r->sampler);
        r->sampler = nullptr;
        r->finish_with(Finish::cancelled, r->usage, "engine closed");
    }
    cache_.clear();
}

Scheduler::Slot * Scheduler::pick_slot(const Request & req, bool & give_away) {
    const std::vector<int32_t> & prompt = req.prompt;
    give_away = false;
    Slot * best = nullptr;
    if (req.params.id_slot >= 0) {
        // Pinned to one slot: that one once it is free.
        if (size_t(req.params.id_slot) >= slots_.size()) return nullptr;
        Slot * s = slots_[size_t(req.params.id_slot)].get();
        if (s->req) return nullptr;
        const size_t common = req.params.cache_prompt ? common_prefix(s->cache, prompt) : 0;
        give_away = !s->cache.empty() && float(common) < 0.5f * float(s->cache.size());
        return s;
    }
    // A slot whose cached prefix covers enough of the prompt: the best such one.
    if (opts_.slot_prompt_similarity > 0.0f && req.params.cache_prompt) {
        float sim_best = 0.0f;
        for (auto & s : slots_) {
            if (s->req || s->cache.empty() || !lora_same(s->lora, req.lora)) continue;
            const float sim = float(common_prefix(s->cache, prompt)) / float(prompt.size());
            if (sim > sim_best && sim > opts_.slot_prompt_similarity) {
                sim_best = sim;
                best = s.get();
            }
        }
        if (best) {
            // Most of what the slot holds would be lost: keep it in the host cache.
            const float keep = sim_best * float(prompt.size()) / float(best->cache.size());
            give_away = keep < 0.5f;
            return best;
        }
    }
    // Otherwise the least recently used free slot, whatever it holds.
    for (auto & s : slots_) {
        if (s->req) continue;
        if (!best || s->last_used < best->last_used) best = s.get();
    }
    give_away = best != nullptr;
    return best;
}

void Scheduler::admit_queued() {
    // Cancelled requests leave the queue wherever they are in it.
    std::vector<std::shared_ptr<Request>> dropped;
    {
        std::lock_guard<std::mutex> lock(queue_mutex_);
        for (auto it = queue_.begin(); it != queue_.end();) {
            if ((*it)->cancelled.load()) {
                dropped.push_back(std::move(*it));
                it = queue_.erase(it);
            } else {
                ++it;
            }
        }
    }
    for (auto & r : dropped) {
        if (r->sampler) common_sampler_free(r->sampler);
        r->sampler = nullptr;
        Usage u = r->usage;
        u.prompt_tokens = int32_t(r->prompt.size());
        u.queue_ms = ms_between(r->t_submit, Request::clock::now());
        r->finish_with(Finish::cancelled, u);
    }
    for (;;) {
        std::shared_ptr<Request> req;
        Slot * best = nullptr;
        bool give_away = false;
        {
            // In queue order; a request pinned to a busy slot lets the ones behind it pass.
            std::lock_guard<std::mutex> lock(queue_mutex_);
            auto it = queue_.begin();
            for (; it != queue_.end(); ++it) {
                best = pick_slot(**it, give_away);
                if (best) break;
                if ((*it)->params.id_slot < 0) return;  // no free slot for anyone
            }
            if (!best) return;
            req = *it;
            queue_.erase(it);
            inflight_.push_back(req);
        }
        Slot & s = *best;
        llama_memory_t mem = llama_get_memory(ctx_);
        if (give_away && cache_.enabled()) {
            // What the slot holds goes to the host cache; a saved state this
            // prompt extends further comes back in its place.
            ScopedTimer t(profiler_, "prompt_cache");
            // With kv_unified the restored state needs free cells: idle slots give theirs up.
            auto purge = [&] { return opts_.kv_unified && purge_idle(&s); };
            // cache_prompt false: nothing saved comes back for this prompt.
            static const std::vector<int32_t> none;
            const uint64_t restores = cache_.restores();
            if (!cache_.exchange(ctx_, s.id, req->params.cache_prompt ? req->prompt : none, s.cache, purge,
                                 lora_tag(s.lora), lora_tag(req->lora))) {
                llama_memory_seq_rm(mem, s.id, -1, -1);
                s.cache.clear();
            } else if (cache_.restores() != restores) {
                s.lora = req->lora;  // the restored state was computed with the request's adapters
            }
        }
        if (!lora_same(s.lora, req->lora)) {
            // KV computed with other adapter scales is of no use to this request.
            llama_memory_seq_rm(mem, s.id, -1, -1);
            s.cache.clear();
        }
        s.lora = req->lora;
        // Keep the shared prefix, but always evaluate at least the last prompt token to get logits.
        size_t keep = std::min(common_prefix(s.cache, req->prompt), req->prompt.size() - 1);
        if (!req->params.cache_prompt) keep = 0;
        if (!llama_memory_seq_rm(mem, s.id, llama_pos(keep), -1)) {
            llama_memory_seq_rm(mem, s.id, -1, -1);
            keep = 0;
        }
        s.cache.resize(keep);
        s.req = req;
        s.n_prompt_done = keep;
        s.generating = false;
        s.n_generated = 0;
        s.pending.clear();
        s.pending_chunk = Chunk{};
        s.pending_starts.clear();
        s.last_used = ++tick_;
        s.t_start = Request::clock::now();
        s.usage = Usage{};
        s.usage.slot = s.id;
        s.usage.prompt_tokens = int32_t(req->prompt.size());
        s.usage.cached_tokens = int32_t(keep);
        s.usage.queue_ms = ms_between(req->t_submit, s.t_start);
        prompt_tokens_ += req->prompt.size();
        cached_tokens_ += keep;
        slots_busy_++;
    }
}

bool Scheduler::build_batch() {
    batch_.n_tokens = 0;
    for (auto & s : slots_) {
        s->i_batch = -1;
        s->n_batch_tokens = 0;
    }
    // Only requests with the chosen adapter scales: llama.cpp applies adapters to the whole batch.
    const bool by_lora = opts_.lora && !opts_.lora->empty();
    auto other_lora = [&](const Slot & s) { return by_lora && !lora_same(s.req->lora, active_lora_); };
    // What each slot puts in: first one step for every generating slot (with
    // its proposal), so that they never wait behind prompts; then prompt
    // chunks, in slot order, while the batch has room.
    int32_t room = n_batch_;
    for (auto & s : slots_) {
        if (!s->req || !s->generating || other_lora(*s)) continue;
        s->n_batch_tokens = 1 + int32_t(s->draft.size());
        room -= s->n_batch_tokens;
    }
    for (auto & s : slots_) {
        if (!s->req || s->generating || other_lora(*s) || room <= 0) continue;
        const size_t left = s->req->prompt.size() - s->n_prompt_done;
        s->n_batch_tokens = int32_t(std::min<size_t>(left, size_t(room)));
        room -= s->n_batch_tokens;
    }
    if (opts_.pair_ubatches) pair_ubatches();
    // Laid out in slot (sequence) order, each slot's tokens together. Without
    // kv_unified every sequence has its own cells, and llama.cpp splits a batch
    // into ubatches that take one run of consecutive sequences at a time: a
    // prompt chunk between two generating slots' tokens would cost one more
    // ubatch (a decode of one or two tokens) each step.
    for (auto & s : slots_) {
        if (s->n_batch_tokens == 0) continue;
        if (s->generating) {
            s->i_batch = batch_.n_tokens;
            const llama_pos p0 = llama_pos(s->cache.size());
            batch_add(batch_, s->last_token, p0, s->id, true);
            if (s->draft.empty()) continue;
            // Its proposal follows, each token with logits: one call checks them all.
            s->i_draft.assign(1, s->i_batch);
            for (size_t i = 0; i < s->draft.size(); ++i) {
                s->i_draft.push_back(batch_.n_tokens);
                batch_add(batch_, s->draft[i], p0 + 1 + llama_pos(i), s->id, true);
            }
            continue;
        }
        const auto & prompt = s->req->prompt;
        for (int32_t i = 0; i < s->n_batch_tokens; ++i) {
            const bool last = s->n_prompt_done + 1 == prompt.size();
            if (last) s->i_batch = batch_.n_tokens;
            batch_add(batch_, prompt[s->n_prompt_done], llama_pos(s->n_prompt_done), s->id, last);
            s->n_prompt_done++;
        }
    }
    return batch_.n_tokens > 0;
}

namespace {

// The token counts of the ubatches llama.cpp cuts a batch into
// (llama_batch_allocr), for a batch laid out as `runs` (sequence id, tokens)
// in increasing sequence order. With one KV stream: slices of n_ubatch
// tokens. Else (split_equal, sequential): from the first sequence with
// tokens left, the run of consecutive sequence ids that have tokens left,
// each giving the same number of tokens, as many as the one with the fewest
// has and n_ubatch allows.
std::vector<int32_t> ubatch_sizes(std::vector<std::pair<int32_t, int32_t>> runs, int32_t n_ubatch, bool one_stream) {
    std::vector<int32_t> sizes;
    if (one_stream) {
        int32_t total = 0;
        for (const auto & r : runs) total += r.second;
        for (; total > 0; total -= std::min(total, n_ubatch)) sizes.push_back(std::min(total, n_ubatch));
        return sizes;
    }
    while (true) {
        std::vector<size_t> set;
        for (size_t i = 0; i < runs.size(); ++i) {
            if (runs[i].second == 0) continue;
            if (set.empty() || runs[i].first == runs[set.back()].first + 1) set.push_back(i);
        }
        if (set.empty()) return sizes;
        const int32_t n = int32_t(set.size());
        int32_t k = std::max<int32_t>(1, n_ubatch / n);
        for (size_t i : set) k = std::min(k, runs[i].second);
        for (size_t i : set) runs[i].second -= k;
        sizes.push_back(k * n);
    }
}

// Tokens that ggml multiplies one column at a time: those of ubatches with
// an odd count above one.
int64_t odd_tokens(const std::vector<int32_t> & sizes) {
    int64_t n = 0;
    for (int32_t s : sizes) {
        if (s > 1 && s % 2 != 0) n += s;
    }
    return n;
}

}  // namespace

// Takes one token at a time off a prompt chunk (that token goes in the next
// step) while that lowers the number of tokens in odd ubatches. A chunk that
// ends its prompt gives up its last token only for that: the request's first
// token then comes one step later, and the token joins the next step's
// ubatch of generating slots.
//
// Only when the batch holds more than one slot's tokens. How llama.cpp cuts a
// batch moves the logits a little (ggml computes attention for a ubatch of
// fewer tokens than its tile another way), so a request alone is read in the
// ubatches llama.cpp would make of it, and its answer is llama-server's; with
// other requests in the batch, what it is read with depends on them anyway,
// in llama-server as here.
void Scheduler::pair_ubatches() {
    size_t n_in_batch = 0;
    for (const auto & s : slots_) n_in_batch += s->n_batch_tokens > 0;
    if (n_in_batch < 2) return;
    const bool one_stream = opts_.kv_unified || slots_.size() == 1;
    auto odd = [&] {
        std::vector<std::pair<int32_t, int32_t>> runs;
        for (const auto & s : slots_) {
            if (s->n_batch_tokens > 0) runs.emplace_back(s->id, s->n_batch_tokens);
        }
        return odd_tokens(ubatch_sizes(std::move(runs), n_ubatch_, one_stream));
    };
    int64_t best = odd();
    while (best > 0) {
        Slot * pick = nullptr;
        for (auto & s : slots_) {
            if (!s->req || s->generating || s->n_batch_tokens < 2) continue;
            s->n_batch_tokens--;
            const int64_t cost = odd();
            s->n_batch_tokens++;
            if (cost < best) {
                best = cost;
                pick = s.get();
            }
        }
        if (!pick) return;
        pick->n_batch_tokens--;
        paired_ubatch_tokens_++;
    }
}

void Scheduler::make_drafts(std::unique_lock<std::mutex> & slots_lock) {
    // Speculative decoding inside continuous batching: every generating slot
    // that can use one gets a proposal of its next tokens, which the coming
    // batch checks after its last token (accept_draft keeps the longest prefix
    // its sampler agrees with, plus the sampler's own next token).
    for (auto & s : slots_) {
        s->draft.clear();
        s->i_draft.clear();
    }
    if (!opts_.spec) return;
    const bool by_lora = opts_.lora && !opts_.lora->empty();
    int32_t n_generating = 0;
    std::vector<Slot *> candidates;
    for (auto & s : slots_) {
        if (!s->req || !s->generating) continue;
        if (by_lora && !lora_same(s->req->lora, active_lora_)) continue;  // not in this batch
        ++n_generating;
        const GenParams & p = s->req->params;
        if (s->req->cancelled.load()) continue;
        if (p.logprobs || p.n_probs > 0) continue;  // log-probabilities come one token at a time
        candidates.push_back(s.get());
    }
    if (candidates.empty()) return;
    // Every generating slot's step and every proposal fit in one batch.
    const int64_t room = (int64_t(n_batch_) - n_generating) / int64_t(candidates.size());
    std::vector<DraftJob> jobs;
    for (Slot * s : candidates) {
        int64_t n_max = opts_.spec->config().n_draft;
        n_max = std::min<int64_t>(n_max, room);
        n_max = std::min<int64_t>(n_max, int64_t(n_ctx_slot_) - int64_t(s->cache.size()) - 2);
        const int32_t max_tokens = s->req->params.max_tokens;
        if (max_tokens >= 0) n_max = std::min<int64_t>(n_max, int64_t(max_tokens) - s->n_generated - 1);
        if (n_max < 1) continue;
        DraftJob j;
        j.seq = s->id;
        j.history = &s->cache;
        j.last = s->last_token;
        j.n_max = int32_t(n_max);
        jobs.push_back(std::move(j));
    }
    if (jobs.empty()) return;
    {
        // slot_states() may read the slots meanwhile; only this thread changes them.
        ScopedTimer t(profiler_, "draft");
        slots_lock.unlock();
        try {
            opts_.spec->draft(jobs);
        } catch (...) {
            slots_lock.lock();
            throw;
        }
        slots_lock.lock();
    }
    for (auto & j : jobs) slots_[size_t(j.seq)]->draft = std::move(j.out);
}

bool Scheduler::drop_drafts() {
    // The KV cache has no room for the proposals: the batch goes without them.
    bool any = false;
    for (auto & s : slots_) {
        any |= !s->draft.empty();
        s->draft.clear();
        s->i_draft.clear();
    }
    if (!any) return false;
    unbuild_batch();
    return build_batch();
}

void Scheduler::accept_draft(Slot & s) {
    Request & req = *s.req;
    llama_memory_t mem = llama_get_memory(ctx_);
    std::vector<llama_token> draft = std::move(s.draft);
    std::vector<int32_t> rows = std::move(s.i_draft);
    s.draft.clear();
    s.i_draft.clear();
    std::vector<llama_token> ids;
    try {
        ScopedTimer t(profiler_, "sample");
        ids = common_sampler_sample_and_accept_n(req.sampler, ctx_, rows, draft);
    } catch (const std::exception & e) {
        finish(s, Finish::error, std::string("sampling failed: ") + e.what());
        return;
    }
    const size_t n_accepted = ids.size() - 1;
    s.cache.push_back(s.last_token);
    s.cache.insert(s.cache.end(), draft.begin(), draft.begin() + long(n_accepted));
    llama_memory_seq_rm(mem, s.id, llama_pos(s.cache.size()), -1);  // the rejected proposals
    spec_drafted_ += draft.size();
    spec_accepted_ += n_accepted;
    s.usage.draft_tokens += int32_t(draft.size());
    s.usage.draft_accepted += int32_t(n_accepted);
    for (llama_token tok : ids) {
        take(s, tok);
        if (!s.req) break;  // finished (end of generation, stop string, max_tokens)
    }
}

void Scheduler::choose_lora() {
    // Requests with different adapter scales take turns: the scales of the
    // next busy slot after the one served last.
    active_lora_.clear();
    if (!opts_.lora || opts_.lora->empty()) return;
    const size_t n = slots_.size();
    for (size_t k = 0; k < n; ++k) {
        const size_t i = (lora_turn_ + k) % n;
        if (!slots_[i]->req) continue;
        active_lora_ = slots_[i]->req->lora;
        lora_turn_ = (i + 1) % n;
        return;
    }
}

void Scheduler::unbuild_batch() {
    // Prompt tokens put in the batch go back to waiting; a generating slot re-adds its token (and proposal).
    for (auto & s : slots_) {
        if (s->req && !s->generating) s->n_prompt_done -= size_t(s->n_batch_tokens);
        s->i_batch = -1;
        s->n_batch_tokens = 0;
        s->i_draft.clear();
    }
    batch_.n_tokens = 0;
}

void Scheduler::fail_batch(const std::string & err) {
    for (auto & s : slots_) {
        if (s->req && s->n_batch_tokens > 0) finish(*s, Finish::error, err);
    }
}

void Scheduler::process_outputs() {
    for (auto & s : slots_) {
        if (!s->req || s->n_batch_tokens == 0) continue;
        if (s->generating && !s->draft.empty()) {
            accept_draft(*s);
            continue;
        }
        if (s->generating) {
            s->cache.push_back(s->last_token);
        } else {
            const auto & prompt = s->req->prompt;
            s->cache.insert(s->cache.end(), prompt.begin() + (s->n_prompt_done - s->n_batch_tokens),
                            prompt.begin() + s->n_prompt_done);
            if (s->n_prompt_done < prompt.size()) continue;  // more prompt to prefill
            s->generating = true;
            s->usage.prompt_ms = ms_between(s->t_start, Request::clock::now());
        }
        try {
            sample(*s);
        } catch (const std::exception & e) {
            // e.g. a grammar that reaches a dead end: this request fails, the engine goes on.
            finish(*s, Finish::error, std::string("sampling failed: ") + e.what());
        }
    }
}

void Scheduler::sample(Slot & s) {
    Request & req = *s.req;
    llama_token tok;
    {
        ScopedTimer t(profiler_, "sample");
        tok = common_sampler_sample(req.sampler, ctx_, s.i_batch);
        common_sampler_accept(req.sampler, tok, true);
    }
    take(s, tok);
}

void Scheduler::take(Slot & s, llama_token tok) {
    // The sampled token `tok` is the request's next one: stop conditions, text, output.
    Request & req = *s.req;
    const auto now = Request::clock::now();
    if (s.n_generated == 0) {
        s.t_first = now;
        s.usage.ttft_ms = ms_between(req.t_submit, now);
    }
    s.n_generated++;
    generated_tokens_++;
    s.last_token = tok;

    if (llama_vocab_is_eog(vocab_, tok) && req.params.eog_stops()) {
        finish(s, Finish::stop);
        return;
    }
    const std::string piece = common_token_to_piece(ctx_, tok, req.is_preserved(tok));
    s.pending_starts.push_back(s.pending.size());
    s.pending += piece;
    s.pending_chunk.tokens.push_back(tok);
    if (req.params.logprobs || req.params.n_probs > 0) {
        const float * logits = llama_get_logits_ith(ctx_, s.i_batch);
        const int32_t n_vocab = llama_vocab_n_tokens(vocab_);
        float max_l = -INFINITY;
        for (int32_t i = 0; i < n_vocab; ++i) max_l = std::max(max_l, logits[i]);
        double sum = 0.0;
        for (int32_t i = 0; i < n_vocab; ++i) sum += std::exp(double(logits[i] - max_l));
        const float log_z = max_l + float(std::log(sum));
        TokenLogprob lp{tok, piece, logits[tok] - log_z, {}};
        if (req.params.n_probs > 0) {
            std::vector<int32_t> ids(n_vocab);
            for (int32_t i = 0; i < n_vocab; ++i) ids[i] = i;
            const int32_t k = std::min(req.params.n_probs, n_vocab);
            std::partial_sort(ids.begin(), ids.begin() + k, ids.end(),
                              [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
            for (int32_t i = 0; i < k; ++i) {
                lp.top.push_back({ids[i], common_token_to_piece(ctx_, ids[i], req.is_preserved(ids[i])), logits[ids[i]] - log_z});
            }
        }
        s.pending_chunk.logprobs.push_back(std::move(lp));
    }

    // Stop strings: cut the text at the earliest match; it is never returned,
    // nor are the tokens (and log-probabilities) whose text lies wholly in it.
    size_t stop_pos = std::string::npos;
    std::string stop_word;
    for (const auto & w : req.params.stop) {
        const size_t from = s.pending.size() > piece.size() + w.size() ? s.pending.size() - piece.size() - w.size() : 0;
        const size_t p = s.pending.find(w, from);
        if (p != std::string::npos && p < stop_pos) {
            stop_pos = p;
            stop_word = w;
        }
    }
    if (stop_pos != std::string::npos) {
        s.pending.resize(stop_pos);
        size_t n_keep = 0;
        while (n_keep < s.pending_starts.size() && s.pending_starts[n_keep] < stop_pos) ++n_keep;
        s.pending_starts.resize(n_keep);
        s.pending_chunk.tokens.resize(n_keep);
        if (s.pending_chunk.logprobs.size() > n_keep) s.pending_chunk.logprobs.resize(n_keep);
        emit(s, true);
        finish(s, Finish::stop, {}, stop_word);
        return;
    }
    const bool hit_max = req.params.max_tokens >= 0 && s.n_generated >= req.params.max_tokens;
    const bool hit_time = req.params.t_max_predict_ms > 0 && ms_between(s.t_first, now) >= req.params.t_max_predict_ms;
    // The next step needs a cell for the token just sampled.
    const bool ctx_full = s.cache.size() + 1 >= n_ctx_slot_ && !(opts_.context_shift && shift_context(s));
    if (hit_max || hit_time || ctx_full) {
        emit(s, true);
        finish(s, Finish::length);
        return;
    }
    emit(s, false);
}

bool Scheduler::shift_context(Slot & s) {
    // llama-server's context shift: keep the first n_keep tokens (the whole
    // prompt with -1, plus BOS), drop half of the rest and move the remainder
    // down; generation goes on in the room that made.
    const GenParams & p = s.req->params;
    int64_t n_keep = p.n_keep < 0 ? int64_t(s.req->prompt.size()) : int64_t(p.n_keep);
    if (llama_vocab_get_add_bos(vocab_)) n_keep += 1;
    n_keep = std::min<int64_t>(int64_t(n_ctx_slot_) - 4, n_keep);
    const int64_t n_past = int64_t(s.cache.size());
    const int64_t n_left = n_past - n_keep;
    const int64_t n_discard = std::clamp<int64_t>(n_left / 2, 0, std::max<int64_t>(0, n_left - 1));
    if (n_keep < 0 || n_discard <= 0) return false;
    llama_memory_t mem = llama_get_memory(ctx_);
    if (!llama_memory_seq_rm(mem, s.id, llama_pos(n_keep), llama_pos(n_keep + n_discard))) return false;
    llama_memory_seq_add(mem, s.id, llama_pos(n_keep + n_discard), llama_pos(n_past), llama_pos(-n_discard));
    s.cache.erase(s.cache.begin() + n_keep, s.cache.begin() + n_keep + n_discard);
    s.usage.context_shifts++;
    context_shifts_++;
    return true;
}

void Scheduler::emit(Slot & s, bool final_flush) {
    // A character cut off by the end of generation can never be completed: drop its bytes.
    size_t n = utf8_complete_prefix(s.pending);
    if (!final_flush) {
        // Hold back a tail that could still become a stop string.
        for (const auto & w : s.req->params.stop) {
            for (size_t k = std::min(w.size() - 1, s.pending.size()); k > 0; --k) {
                if (s.pending.compare(s.pending.size() - k, k, w, 0, k) == 0) {
                    n = std::min(n, s.pending.size() - k);
                    break;
                }
            }
        }
    }
    if (n == 0 && !final_flush) return;
    if (n == 0 && s.pending_chunk.tokens.empty()) return;
    // Tokens go out with the first byte of their text; those wholly in the
    // held-back tail wait (a stop string may still swallow them).
    size_t n_tok = s.pending_chunk.tokens.size();
    if (!final_flush && n < s.pending.size()) {
        n_tok = 0;
        while (n_tok < s.pending_starts.size() && s.pending_starts[n_tok] < n) ++n_tok;
    }
    Chunk c;
    c.text = s.pending.substr(0, n);
    c.tokens.assign(s.pending_chunk.tokens.begin(), s.pending_chunk.tokens.begin() + n_tok);
    s.pending_chunk.tokens.erase(s.pending_chunk.tokens.begin(), s.pending_chunk.tokens.begin() + n_tok);
    const size_t n_lp = std::min(n_tok, s.pending_chunk.logprobs.size());
    c.logprobs.assign(std::make_move_iterator(s.pending_chunk.logprobs.begin()),
                      std::make_move_iterator(s.pending_chunk.logprobs.begin() + n_lp));
    s.pending_chunk.logprobs.erase(s.pending_chunk.logprobs.begin(), s.pending_chunk.logprobs.begin() + n_lp);
    s.pending_starts.erase(s.pending_starts.begin(), s.pending_starts.begin() + n_tok);
    if (final_flush) {
        s.pending.clear();
        s.pending_starts.clear();
        s.pending_chunk = Chunk{};
    } else {
        s.pending.erase(0, n);
        for (auto & st : s.pending_starts) st = st > n ? st - n : 0;
    }
    s.req->push(std::move(c));
}

void Scheduler::finish(Slot & s, Finish f, const std::string & err, const std::string & stop_word) {
    if (!s.req) return;
    if (f != Finish::error && (!s.pending.empty() || !s.pending_chunk.tokens.empty())) emit(s, true);
    if (f == Finish::error) {
        // What the sequence holds is not trusted after a failure: start it afresh.
        llama_memory_seq_rm(llama_get_memory(ctx_), s.id, -1, -1);
        s.cache.clear();
    }
    const auto now = Request::clock::now();
    s.usage.completion_tokens = s.n_generated;
    if (s.n_generated > 0) s.usage.decode_ms = ms_between(s.t_first, now);
    if (s.req->sampler) common_sampler_free(s.req->sampler);
    s.req->sampler = nullptr;
    std::shared_ptr<Request> req = std::move(s.req);
    {
        std::lock_guard<std::mutex> lock(queue_mutex_);
        inflight_.erase(std::remove(inflight_.begin(), inflight_.end(), req), inflight_.end());
    }
    s.generating = false;
    s.draft.clear();
    s.i_draft.clear();
    s.pending.clear();
    s.pending_chunk = Chunk{};
    s.pending_starts.clear();
    s.last_used = ++tick_;
    // The slot is free before the caller hears that its request ended.
    slots_busy_--;
    requests_done_++;
    req->finish_with(f, s.usage, err, stop_word);
}

}  // namespace kolosal
