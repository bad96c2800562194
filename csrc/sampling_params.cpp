#include "sampling_params.h"

#include "errors.h"
#include "json-schema-to-grammar.h"
#include "json.h"

#include <algorithm>
#include <cmath>

namespace kolosal {

namespace {
void require(bool ok, const char * param, const std::string & msg) {
    if (!ok) throw InvalidParameterError(param, std::string("invalid '") + param + "': " + msg);
}
}  // namespace

void validate(const GenParams & p, int32_t n_vocab) {
    require(p.max_tokens == -1 || p.max_tokens >= 1, "max_tokens", "must be >= 1 (or -1 for no limit)");
    require(std::isfinite(p.temperature) && p.temperature >= 0.0f, "temperature", "must be >= 0");
    require(p.top_k >= 0, "top_k", "must be >= 0 (0 disables it)");
    require(std::isfinite(p.top_p) && p.top_p > 0.0f && p.top_p <= 1.0f, "top_p", "must be in (0, 1]");
    require(std::isfinite(p.min_p) && p.min_p >= 0.0f && p.min_p <= 1.0f, "min_p", "must be in [0, 1]");
    require(std::isfinite(p.typical_p) && p.typical_p > 0.0f && p.typical_p <= 1.0f, "typical_p", "must be in (0, 1]");
    require(std::isfinite(p.repeat_penalty) && p.repeat_penalty > 0.0f, "repeat_penalty", "must be > 0");
    require(std::isfinite(p.presence_penalty) && std::fabs(p.presence_penalty) <= 2.0f, "presence_penalty", "must be in [-2, 2]");
    require(std::isfinite(p.frequency_penalty) && std::fabs(p.frequency_penalty) <= 2.0f, "frequency_penalty", "must be in [-2, 2]");
    require(p.repeat_last_n >= -1, "repeat_last_n", "must be >= -1 (-1: whole context)");
    require(p.n_probs >= 0 && p.n_probs <= 20, "top_logprobs", "must be in [0, 20]");
    for (const auto & s : p.stop) require(!s.empty(), "stop", "stop strings must not be empty");
    require(p.stop.size() <= 16, "stop", "at most 16 stop strings");
    for (const auto & lb : p.logit_bias) {
        require(lb.first >= 0 && lb.first < n_vocab, "logit_bias",
                "token id " + std::to_string(lb.first) + " is outside the vocabulary (0.." + std::to_string(n_vocab - 1) + ")");
        require(!std::isnan(lb.second), "logit_bias", "bias must be a number");
    }
    require(p.grammar.empty() || p.json_schema.empty(), "grammar", "give either grammar or json_schema, not both");
}

common_params_sampling to_common(const GenParams & p, const llama_vocab * vocab, uint32_t default_seed, uint32_t n_ctx_slot) {
    common_params_sampling s;
    s.seed = p.seed ? *p.seed : default_seed;
    s.temp = p.temperature;
    s.top_k = p.top_k;
    s.top_p = p.top_p;
    s.min_p = p.min_p;
    s.typ_p = p.typical_p;
    s.penalty_repeat = p.repeat_penalty;
    s.penalty_present = p.presence_penalty;
    s.penalty_freq = p.frequency_penalty;
    // llama.cpp clamps a negative window to 0 (penalties off); -1 means the whole context.
    s.penalty_last_n = p.repeat_last_n < 0 ? int32_t(n_ctx_slot) : p.repeat_last_n;
    s.n_prev = std::max(s.n_prev, s.penalty_last_n);
    s.ignore_eos = p.ignore_eos;
    s.n_probs = p.n_probs;
    s.no_perf = true;
    for (const auto & lb : p.logit_bias) s.logit_bias.push_back({lb.first, lb.second});
    if (!p.eog_stops()) {
        // Same as llama-server: push every end-of-generation token to -inf. Not with a
        // grammar: once it is complete, end-of-generation is the only valid token.
        const int32_t n_vocab = llama_vocab_n_tokens(vocab);
        for (int32_t t = 0; t < n_vocab; ++t) {
            if (llama_vocab_is_eog(vocab, t)) s.logit_bias.push_back({t, -INFINITY});
        }
    }
    if (!p.json_schema.empty()) {
        try {
            s.grammar = common_grammar(COMMON_GRAMMAR_TYPE_OUTPUT_FORMAT,
                                       json_schema_to_grammar(common_json::parse(p.json_schema)));
        } catch (const std::exception & e) {
            throw InvalidParameterError("json_schema", std::string("invalid 'json_schema': ") + e.what());
        }
    } else if (!p.grammar.empty()) {
        const common_grammar_type type = !p.grammar_from_chat ? COMMON_GRAMMAR_TYPE_USER
                                         : p.grammar_lazy     ? COMMON_GRAMMAR_TYPE_TOOL_CALLS
                                                              : COMMON_GRAMMAR_TYPE_OUTPUT_FORMAT;
        s.grammar = common_grammar(type, p.grammar);
        if (p.grammar_from_chat) s.generation_prompt = p.generation_prompt;
    }
    s.grammar_lazy = p.grammar_lazy;
    s.grammar_triggers = p.grammar_triggers;
    for (const auto & t : p.preserved_tokens) {
        auto ids = common_tokenize(vocab, t, false, true);
        if (ids.size() == 1) s.preserved_tokens.insert(ids[0]);
    }
    return s;
}

}  // namespace kolosal
