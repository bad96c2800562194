#include "sampling_params.h"

#include "errors.h"
#include "json-schema-to-grammar.h"
#include "json.h"
#include "sampling.h"

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

    require(std::isfinite(p.dry_multiplier) && p.dry_multiplier >= 0.0f, "dry_multiplier", "must be >= 0 (0 disables DRY)");
    require(std::isfinite(p.dry_base) && p.dry_base >= 1.0f, "dry_base", "must be >= 1");
    require(p.dry_allowed_length >= 0, "dry_allowed_length", "must be >= 0");
    require(p.dry_penalty_last_n >= -1, "dry_penalty_last_n", "must be >= -1 (-1: whole context, 0: off)");
    if (p.dry_sequence_breakers) {
        require(!p.dry_sequence_breakers->empty(), "dry_sequence_breakers", "must be a non-empty list of strings");
        for (const auto & b : *p.dry_sequence_breakers) {
            require(!b.empty(), "dry_sequence_breakers", "sequence breakers must not be empty strings");
        }
    }
    require(std::isfinite(p.xtc_probability) && p.xtc_probability >= 0.0f && p.xtc_probability <= 1.0f,
            "xtc_probability", "must be in [0, 1]");
    require(std::isfinite(p.xtc_threshold) && p.xtc_threshold >= 0.0f && p.xtc_threshold <= 1.0f,
            "xtc_threshold", "must be in [0, 1] (above 0.5 XTC removes nothing)");
    require(p.mirostat >= 0 && p.mirostat <= 2, "mirostat", "must be 0 (off), 1 (Mirostat) or 2 (Mirostat 2.0)");
    require(std::isfinite(p.mirostat_tau) && p.mirostat_tau >= 0.0f, "mirostat_tau", "must be >= 0");
    require(std::isfinite(p.mirostat_eta) && p.mirostat_eta > 0.0f && p.mirostat_eta <= 1.0f, "mirostat_eta",
            "must be in (0, 1]");
    require(std::isfinite(p.top_n_sigma) && (p.top_n_sigma >= 0.0f || p.top_n_sigma == -1.0f), "top_n_sigma",
            "must be >= 0 (or -1: off)");
    require(p.min_keep >= 0, "min_keep", "must be >= 0");
    require(p.samplers.size() <= 32, "samplers", "at most 32 entries");
    sampler_chain(p.samplers);
    require(p.id_slot >= -1, "id_slot", "must be a slot id >= 0 (or -1: any slot)");
    require(p.t_max_predict_ms >= 0, "t_max_predict_ms", "must be >= 0 (0: no time limit)");
    require(p.n_keep >= -1, "n_keep", "must be >= -1 (-1: the whole prompt)");
}

std::vector<common_sampler_type> sampler_chain(const std::vector<std::string> & names) {
    std::vector<common_sampler_type> out;
    for (const auto & name : names) {
        // One name at a time: llama.cpp skips a name it does not know, we refuse it.
        const auto one = common_sampler_types_from_names({name});
        if (one.size() != 1 || one[0] == COMMON_SAMPLER_TYPE_INFILL) {
            std::string known;
            for (const auto & n : default_sampler_names()) known += (known.empty() ? "" : ", ") + n;
            throw InvalidParameterError("samplers", "invalid 'samplers': unknown sampler '" + name + "' (known: " + known + ", adaptive_p)");
        }
        out.push_back(one[0]);
    }
    return out;
}

std::vector<std::string> default_sampler_names() {
    std::vector<std::string> out;
    for (const auto t : common_params_sampling().samplers) out.push_back(common_sampler_type_to_str(t));
    return out;
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
    s.min_keep = p.min_keep;
    s.dry_multiplier = p.dry_multiplier;
    s.dry_base = p.dry_base;
    s.dry_allowed_length = p.dry_allowed_length;
    s.dry_penalty_last_n = p.dry_penalty_last_n < 0 ? int32_t(n_ctx_slot) : p.dry_penalty_last_n;
    if (p.dry_sequence_breakers) s.dry_sequence_breakers = *p.dry_sequence_breakers;
    s.xtc_probability = p.xtc_probability;
    s.xtc_threshold = p.xtc_threshold;
    s.mirostat = p.mirostat;
    s.mirostat_tau = p.mirostat_tau;
    s.mirostat_eta = p.mirostat_eta;
    s.top_n_sigma = p.top_n_sigma;
    if (!p.samplers.empty()) s.samplers = sampler_chain(p.samplers);
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
