#include "prompt_cache.h"

#include <algorithm>
#include <new>

namespace kolosal {

size_t common_prefix(const std::vector<llama_token> & a, const std::vector<llama_token> & b) {
    const size_t n = std::min(a.size(), b.size());
    size_t i = 0;
    while (i < n && a[i] == b[i]) ++i;
    return i;
}

namespace {
size_t entry_bytes(const std::vector<llama_token> & tokens, const std::vector<uint8_t> & state) {
    return state.size() + tokens.size() * sizeof(llama_token);
}
}  // namespace

void PromptCache::publish() {
    bytes_.store(total_);
    entries_.store(entries_list_.size());
}

void PromptCache::drop(Iter it) {
    total_ -= entry_bytes(it->tokens, it->state);
    entries_list_.erase(it);
}

PromptCache::Iter PromptCache::find_best(const std::vector<llama_token> & prompt, const std::vector<llama_token> & tokens,
                                         uint64_t tag) {
    auto best = entries_list_.end();
    if (prompt.empty()) return best;
    const size_t lcp_now = common_prefix(tokens, prompt);
    // An empty sequence loses nothing: any useful entry beats it.
    float keep_best = tokens.empty() ? -1.0f : float(lcp_now) / float(tokens.size());
    float sim_best = float(lcp_now) / float(prompt.size());
    for (auto it = entries_list_.begin(); it != entries_list_.end(); ++it) {
        if (it->tag != tag) continue;
        const size_t lcp = common_prefix(it->tokens, prompt);
        if (lcp == 0) continue;
        const float keep = float(lcp) / float(it->tokens.size());
        const float sim = float(lcp) / float(prompt.size());
        // Restoring a long state to use a sliver of it costs more than it saves.
        if (keep < 0.25f) continue;
        if (keep > keep_best && sim > sim_best) {
            keep_best = keep;
            sim_best = sim;
            best = it;
        }
    }
    return best;
}

bool PromptCache::save(llama_context * ctx, llama_seq_id seq, const std::vector<llama_token> & tokens, uint64_t tag) {
    return save_keeping(ctx, seq, tokens, restoring_, tag);
}

bool PromptCache::save_keeping(llama_context * ctx, llama_seq_id seq, const std::vector<llama_token> & tokens, Iter keep,
                               uint64_t tag) {
    if (!enabled() || tokens.empty()) return false;
    // Already kept: an entry holds these tokens (and maybe more).
    for (const auto & e : entries_list_) {
        if (e.tag == tag && common_prefix(e.tokens, tokens) == tokens.size()) return false;
    }
    const size_t size = llama_state_seq_get_size_ext(ctx, seq, LLAMA_STATE_SEQ_FLAGS_NONE);
    if (size == 0) return false;
    const size_t need = size + tokens.size() * sizeof(llama_token);
    if (need > limit_bytes_) return false;  // would push out everything else
    // `keep` is about to leave (restored into the sequence): it does not count against the limit.
    const size_t leaving = keep != entries_list_.end() ? entry_bytes(keep->tokens, keep->state) : 0;
    // Entries this state extends are worth nothing once it is kept.
    for (auto it = entries_list_.begin(); it != entries_list_.end();) {
        auto next = std::next(it);
        if (it != keep && it->tag == tag && common_prefix(it->tokens, tokens) == it->tokens.size()) drop(it);
        it = next;
    }
    // Make room before allocating, oldest first, so the limit holds.
    for (auto it = entries_list_.begin(); it != entries_list_.end() && total_ - leaving + need > limit_bytes_;) {
        auto next = std::next(it);
        if (it != keep) drop(it);
        it = next;
    }
    if (total_ - leaving + need > limit_bytes_) {
        publish();
        return false;
    }
    Entry e;
    try {
        e.state.resize(size);
        e.tokens = tokens;
        e.tag = tag;
    } catch (const std::bad_alloc &) {
        publish();
        return false;
    }
    const size_t got = llama_state_seq_get_data_ext(ctx, e.state.data(), e.state.size(), seq, LLAMA_STATE_SEQ_FLAGS_NONE);
    if (got != size) {
        publish();
        return false;
    }
    total_ += entry_bytes(e.tokens, e.state);
    entries_list_.push_back(std::move(e));
    saves_++;
    publish();
    return true;
}

bool PromptCache::exchange(llama_context * ctx, llama_seq_id seq, const std::vector<llama_token> & prompt,
                           std::vector<llama_token> & tokens, const std::function<bool()> & make_room, uint64_t tag,
                           uint64_t want_tag) {
    if (!enabled()) return true;
    // Chosen before saving, so that making room for the save cannot push it out.
    // What the sequence holds is only worth keeping in place for a prompt computed the same way.
    const Iter best = find_best(prompt, tag == want_tag ? tokens : std::vector<llama_token>{}, want_tag);
    save_keeping(ctx, seq, tokens, best, tag);
    if (best == entries_list_.end()) return true;
    restoring_ = best;
    size_t n = 0;
    for (;;) {
        n = llama_state_seq_set_data_ext(ctx, best->state.data(), best->state.size(), seq, LLAMA_STATE_SEQ_FLAGS_NONE);
        if (n == best->state.size() || !make_room()) break;
    }
    restoring_ = entries_list_.end();
    // Failed: the entry stays (there may be room later); the sequence was cleared.
    if (n != best->state.size()) return false;
    // The entry now lives in the sequence; it comes back here when the slot is given away again.
    tokens = std::move(best->tokens);
    total_ -= best->state.size() + tokens.size() * sizeof(llama_token);
    entries_list_.erase(best);
    restores_++;
    publish();
    return true;
}

void PromptCache::clear() {
    entries_list_.clear();
    restoring_ = entries_list_.end();
    total_ = 0;
    publish();
}

}  // namespace kolosal
