// Per-request generation parameters, validated on the caller's thread before
// a request reaches the scheduler.
#pragma once

#include "common.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kolosal {

struct GenParams {
    int32_t max_tokens = -1;  // -1: until end of generation or the slot's context is full
    float temperature = 0.8f;
    int32_t top_k = 40;
    float top_p = 0.95f;
    float min_p = 0.05f;
    float typical_p = 1.0f;
    float repeat_penalty = 1.0f;
    float presence_penalty = 0.0f;
    float frequency_penalty = 0.0f;
    int32_t repeat_last_n = 64;   // -1: the whole context of a slot
    std::optional<uint32_t> seed;
    std::vector<std::string> stop;
    bool ignore_eos = false;
    std::vector<std::pair<int32_t, float>> logit_bias;
    std::string grammar;       // GBNF
    std::string json_schema;   // JSON text; converted to GBNF
    int32_t n_probs = 0;       // top alternatives reported per token (0: none)
    bool logprobs = false;     // report the chosen token's log-probability

    // llama.cpp's other samplers, under llama-server's names and with its defaults.
    float dry_multiplier = 0.0f;        // 0: DRY off
    float dry_base = 1.75f;
    int32_t dry_allowed_length = 2;
    int32_t dry_penalty_last_n = 64;    // -1: the whole context of a slot; 0: off
    std::optional<std::vector<std::string>> dry_sequence_breakers;  // unset: llama.cpp's default breakers
    float xtc_probability = 0.0f;       // 0: XTC off
    float xtc_threshold = 0.1f;
    int32_t mirostat = 0;               // 0: off, 1: Mirostat, 2: Mirostat 2.0
    float mirostat_tau = 5.0f;
    float mirostat_eta = 0.1f;
    float top_n_sigma = -1.0f;          // -1: off
    int32_t min_keep = 0;
    std::vector<std::string> samplers;  // the chain's order by name; empty: llama.cpp's default order

    // Slot and cache handling (llama-server's request fields).
    bool cache_prompt = true;           // false: the prompt is evaluated afresh, no cached prefix is reused
    int32_t id_slot = -1;               // >= 0: run in this slot (waits for it to be free)
    int32_t t_max_predict_ms = 0;       // > 0: stop generating this long after the first token (finish: length)
    int32_t n_keep = 0;                 // context shift: prompt tokens always kept (-1: the whole prompt)

    // Chat-template derived settings (filled by Engine::chat).
    bool grammar_from_chat = false;    // grammar came from the chat template (output format / tool calls)
    std::string generation_prompt;     // already in the prompt; the grammar starts after it
    bool grammar_lazy = false;
    std::vector<common_grammar_trigger> grammar_triggers;
    std::vector<std::string> preserved_tokens;

    bool constrained() const { return !grammar.empty() || !json_schema.empty(); }
    // End-of-generation ends the request unless ignore_eos asks to go on; a
    // grammar that is complete allows nothing else, so it always ends there.
    bool eog_stops() const { return !ignore_eos || constrained(); }
};

// Throws InvalidParameterError naming the offending parameter.
void validate(const GenParams & p, int32_t n_vocab);

// llama-server's sampler names (and their aliases, e.g. "top-k", "temp") in
// the order given; throws InvalidParameterError("samplers") for an unknown one.
std::vector<common_sampler_type> sampler_chain(const std::vector<std::string> & names);

// The default chain by llama-server's names, in llama.cpp's order.
std::vector<std::string> default_sampler_names();

// Builds llama.cpp's sampler settings; converts json_schema to a grammar.
// `n_ctx_slot` is what repeat_last_n = -1 stands for.
common_params_sampling to_common(const GenParams & p, const llama_vocab * vocab, uint32_t default_seed, uint32_t n_ctx_slot);

}  // namespace kolosal
