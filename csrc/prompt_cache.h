// Host-memory prompt cache: sequence states (KV cells) of prompts a slot had
// to give up, kept in RAM so that a conversation coming back restores its
// state instead of prefilling its whole history again. Bounded in bytes,
// oldest entry out first. Only the scheduler thread changes it; the size
// figures are readable from any thread.
#pragma once

#include "llama.h"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <vector>

namespace kolosal {

class PromptCache {
public:
    explicit PromptCache(size_t limit_bytes) : limit_bytes_(limit_bytes) {}

    bool enabled() const { return limit_bytes_ > 0; }
    size_t limit_bytes() const { return limit_bytes_; }
    size_t bytes() const { return bytes_.load(); }
    size_t entries() const { return entries_.load(); }
    uint64_t saves() const { return saves_.load(); }
    uint64_t restores() const { return restores_.load(); }

    // A slot is given to `prompt`: what sequence `seq` holds (`tokens`) is
    // saved, and the entry whose common prefix with `prompt` beats it (more
    // of the prompt and more of the entry kept) moves into the sequence in
    // its place; `tokens` then become that entry's. When the KV cache has no
    // room for the entry, `make_room` is asked to free some (it may save()
    // other sequences meanwhile) until it returns false. Returns false when
    // the restore failed: the sequence must then be cleared by the caller.
    // `tag` tells states of the same tokens apart when they were computed
    // differently (e.g. with other LoRA scales): only entries with the tag
    // of the new prompt (`want_tag`) are restored; the saved one gets `tag`.
    bool exchange(llama_context * ctx, llama_seq_id seq, const std::vector<llama_token> & prompt,
                  std::vector<llama_token> & tokens, const std::function<bool()> & make_room, uint64_t tag = 0,
                  uint64_t want_tag = 0);

    // Copies the state of sequence `seq` (holding `tokens`) into the cache,
    // unless an entry already holds these tokens or the state alone exceeds
    // the limit. Entries that `tokens` extends are dropped; old ones make room.
    bool save(llama_context * ctx, llama_seq_id seq, const std::vector<llama_token> & tokens, uint64_t tag = 0);

    void clear();

private:
    struct Entry {
        std::vector<llama_token> tokens;
        std::vector<uint8_t> state;
        uint64_t tag = 0;
    };

    using Iter = std::list<Entry>::iterator;
    Iter find_best(const std::vector<llama_token> & prompt, const std::vector<llama_token> & tokens, uint64_t tag);
    bool save_keeping(llama_context * ctx, llama_seq_id seq, const std::vector<llama_token> & tokens, Iter keep,
                      uint64_t tag);
    void drop(Iter it);
    void publish();

    size_t limit_bytes_;
    std::list<Entry> entries_list_;  // oldest first
    Iter restoring_ = entries_list_.end();  // the entry exchange() is moving into a sequence: never pushed out
    size_t total_ = 0;
    std::atomic<size_t> bytes_{0};
    std::atomic<size_t> entries_{0};
    std::atomic<uint64_t> saves_{0};
    std::atomic<uint64_t> restores_{0};
};

// Length of the common prefix of two token sequences.
size_t common_prefix(const std::vector<llama_token> & a, const std::vector<llama_token> & b);

}  // namespace kolosal
