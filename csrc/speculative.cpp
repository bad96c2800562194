#include "speculative.h"

#include "batch.h"
#include "errors.h"
#include "model_file.h"

#include "common.h"
#include "ngram-map.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

namespace kolosal {

namespace {

// A draft model may miss or add a few tokens at the end of the vocabulary
// (padding, extra special tokens); beyond that the ids mean other things.
constexpr int32_t kMaxVocabDifference = 128;
// The first ids are often control tokens whose text differs between releases of a family.
constexpr int32_t kFirstCheckedToken = 5;

}  // namespace

std::string vocab_mismatch(const llama_model * target, const llama_model * draft) {
    const llama_vocab * vt = llama_model_get_vocab(target);
    const llama_vocab * vd = llama_model_get_vocab(draft);
    if (llama_vocab_type(vt) != llama_vocab_type(vd)) {
        return "the tokenizer types differ (" + std::to_string(int(llama_vocab_type(vd))) + " vs the model's " +
               std::to_string(int(llama_vocab_type(vt))) + ")";
    }
    if (llama_vocab_get_add_bos(vt) != llama_vocab_get_add_bos(vd) ||
        (llama_vocab_get_add_bos(vt) && llama_vocab_bos(vt) != llama_vocab_bos(vd))) {
        return "the beginning-of-sequence tokens differ";
    }
    if (llama_vocab_get_add_eos(vt) != llama_vocab_get_add_eos(vd) ||
        (llama_vocab_get_add_eos(vt) && llama_vocab_eos(vt) != llama_vocab_eos(vd))) {
        return "the end-of-sequence tokens differ";
    }
    const int32_t nt = llama_vocab_n_tokens(vt);
    const int32_t nd = llama_vocab_n_tokens(vd);
    if (std::abs(nt - nd) > kMaxVocabDifference) {
        return "the vocabulary sizes differ too much (" + std::to_string(nd) + " tokens vs the model's " +
               std::to_string(nt) + ")";
    }
    for (int32_t i = kFirstCheckedToken; i < std::min(nt, nd); ++i) {
        const char * a = llama_vocab_get_text(vt, i);
        const char * b = llama_vocab_get_text(vd, i);
        if (std::strcmp(a, b) != 0) {
            return "token " + std::to_string(i) + " is '" + b + "' in the draft model but '" + a + "' in the model";
        }
    }
    return {};
}

Speculator::Speculator(const SpecConfig & cfg, const llama_model * target, uint32_t n_ctx_seq) : cfg_(cfg) {
    if (cfg_.type != "draft" && cfg_.type != "ngram") {
        throw InvalidParameterError("spec_type", "spec_type must be 'draft' (with draft_model) or 'ngram'");
    }
    if (cfg_.n_draft < 1 || cfg_.n_draft > 256) throw InvalidParameterError("n_draft", "n_draft must be in [1, 256]");
    if (cfg_.n_min < 0 || cfg_.n_min > cfg_.n_draft) throw InvalidParameterError("draft_min", "draft_min must be in [0, n_draft]");
    if (!(cfg_.p_min >= 0.0f && cfg_.p_min <= 1.0f)) throw InvalidParameterError("p_min", "p_min must be in [0, 1]");
    if (cfg_.ngram_n < 1 || cfg_.ngram_n > 1024) throw InvalidParameterError("spec_ngram_n", "spec_ngram_n must be in [1, 1024]");
    if (cfg_.type == "ngram") return;
    if (cfg_.draft_model.empty()) throw InvalidParameterError("draft_model", "spec_type 'draft' needs a draft_model");
    std::error_code ec;
    if (!std::filesystem::is_regular_file(cfg_.draft_model, ec)) {
        throw ModelNotFoundError("draft model not found: " + cfg_.draft_model);
    }
    inspect_model_file(cfg_.draft_model);  // not a GGUF, truncated, unknown architecture: its typed error
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = cfg_.n_gpu_layers;
    model_.reset(llama_model_load_from_file(cfg_.draft_model.c_str(), mp));
    if (!model_) throw ModelLoadError("llama.cpp could not load the draft model: " + cfg_.draft_model);
    const std::string why = vocab_mismatch(target, model_.get());
    if (!why.empty()) {
        throw InvalidModelError("the draft model " + cfg_.draft_model + " cannot draft for this model: " + why);
    }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx_seq;
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_seq_max = 1;
    cp.n_threads = cfg_.n_threads;
    cp.n_threads_batch = cfg_.n_threads;
    cp.no_perf = true;
    cp.abort_callback = [](void * self) { return static_cast<Speculator *>(self)->abort_.load(); };
    cp.abort_callback_data = this;
    ctx_.reset(llama_init_from_model(model_.get(), cp));
    if (!ctx_) throw OutOfMemoryError("could not allocate the draft model's context");
}

void Speculator::attach(ggml_threadpool * tp, ggml_threadpool * tp_batch) {
    if (ctx_ && tp) llama_attach_threadpool(ctx_.get(), tp, tp_batch);
}

uint64_t Speculator::draft_bytes() const {
    if (!model_) return 0;
    uint64_t b = llama_model_size(model_.get());
    if (ctx_) b += llama_state_get_size(ctx_.get());
    return b;
}

std::vector<llama_token> Speculator::draft(const std::vector<llama_token> & history, llama_token last, int32_t n_max) {
    n_max = std::min(n_max, cfg_.n_draft);
    if (n_max < std::max(1, cfg_.n_min)) return {};
    std::vector<llama_token> out;
    if (cfg_.type == "ngram") {
        common_ngram_simple_config c{uint16_t(cfg_.ngram_n), uint16_t(n_max)};
        out = common_ngram_simple_draft(c, history, last);
        if (int32_t(out.size()) > n_max) out.resize(size_t(n_max));
    } else {
        out = draft_with_model(history, last, n_max);
    }
    if (int32_t(out.size()) < cfg_.n_min) out.clear();
    return out;
}

std::vector<llama_token> Speculator::draft_with_model(const std::vector<llama_token> & history, llama_token last,
                                                      int32_t n_max) {
    llama_context * ctx = ctx_.get();
    llama_memory_t mem = llama_get_memory(ctx);
    const uint32_t n_ctx = llama_n_ctx(ctx);
    if (history.size() + size_t(n_max) + 2 > n_ctx) return {};
    // Keep what the draft context shares with the sequence; decode the rest and `last`.
    size_t keep = 0;
    while (keep < dft_cache_.size() && keep < history.size() && dft_cache_[keep] == history[keep]) ++keep;
    if (!llama_memory_seq_rm(mem, 0, llama_pos(keep), -1)) {
        llama_memory_seq_rm(mem, 0, -1, -1);
        keep = 0;
    }
    dft_cache_.resize(keep);
    std::vector<llama_token> todo(history.begin() + long(keep), history.end());
    todo.push_back(last);
    const int32_t n_batch = int32_t(llama_n_batch(ctx));
    llama_batch batch = llama_batch_init(std::max(n_batch, 1), 0, 1);
    std::vector<llama_token> out;
    bool ok = true;
    for (size_t i = 0; i < todo.size() && ok;) {
        batch.n_tokens = 0;
        const size_t end = std::min(todo.size(), i + size_t(n_batch));
        for (size_t j = i; j < end; ++j) {
            batch_add(batch, todo[j], llama_pos(dft_cache_.size() + (j - i)), 0, j + 1 == todo.size());
        }
        ok = llama_decode(ctx, batch) == 0;
        if (ok) dft_cache_.insert(dft_cache_.end(), todo.begin() + long(i), todo.begin() + long(end));
        i = end;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model_.get());
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    while (ok && int32_t(out.size()) < n_max) {
        // Greedy: the draft's top token, while it is likely enough.
        const float * logits = llama_get_logits_ith(ctx, -1);
        int32_t best = 0;
        for (int32_t t = 1; t < n_vocab; ++t) {
            if (logits[t] > logits[best]) best = t;
        }
        if (cfg_.p_min > 0.0f) {
            double sum = 0.0;
            for (int32_t t = 0; t < n_vocab; ++t) sum += std::exp(double(logits[t] - logits[best]));
            if (1.0 / sum < double(cfg_.p_min)) break;
        }
        out.push_back(best);
        if (llama_vocab_is_eog(vocab, best) || int32_t(out.size()) == n_max) break;
        batch.n_tokens = 0;
        batch_add(batch, best, llama_pos(dft_cache_.size()), 0, true);
        ok = llama_decode(ctx, batch) == 0;
        if (ok) dft_cache_.push_back(best);
    }
    llama_batch_free(batch);
    if (!ok) {
        // The draft context is not trusted after a failure: it starts afresh next time.
        llama_memory_seq_rm(mem, 0, -1, -1);
        dft_cache_.clear();
    }
    return out;
}

}  // namespace kolosal
