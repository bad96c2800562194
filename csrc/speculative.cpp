#include "speculative.h"

#include "batch.h"
#include "errors.h"
#include "model_file.h"
#include "prompt_cache.h"

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

Speculator::Speculator(const SpecConfig & cfg, const llama_model * target, uint32_t n_ctx_seq, int32_t n_seq)
    : cfg_(cfg) {
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
    n_seq = std::max(n_seq, 1);
    cp.n_ctx = n_ctx_seq * uint32_t(n_seq);
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    cp.n_seq_max = uint32_t(n_seq);
    cp.kv_unified = false;  // each slot's sequence has its own cells, as in the model's context
    cp.n_threads = cfg_.n_threads;
    cp.n_threads_batch = cfg_.n_threads;
    cp.no_perf = true;
    cp.abort_callback = [](void * self) { return static_cast<Speculator *>(self)->abort_.load(); };
    cp.abort_callback_data = this;
    ctx_.reset(llama_init_from_model(model_.get(), cp));
    if (!ctx_) throw OutOfMemoryError("could not allocate the draft model's context");
    dft_cache_.resize(size_t(n_seq));
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

void Speculator::draft(std::vector<DraftJob> & jobs) {
    std::vector<DraftJob *> by_model;
    for (auto & j : jobs) {
        j.out.clear();
        j.n_max = std::min(j.n_max, cfg_.n_draft);
        if (j.n_max < std::max(1, cfg_.n_min) || !j.history) continue;
        if (cfg_.type == "ngram") {
            common_ngram_simple_config c{uint16_t(cfg_.ngram_n), uint16_t(j.n_max)};
            j.out = common_ngram_simple_draft(c, *j.history, j.last);
            if (int32_t(j.out.size()) > j.n_max) j.out.resize(size_t(j.n_max));
        } else if (j.seq >= 0 && size_t(j.seq) < dft_cache_.size()) {
            by_model.push_back(&j);
        }
    }
    if (!by_model.empty()) draft_with_model(by_model);
    for (auto & j : jobs) {
        if (int32_t(j.out.size()) < cfg_.n_min) j.out.clear();
    }
}

void Speculator::forget_all() {
    // The draft context is not trusted after a failure: every sequence starts afresh next time.
    llama_memory_clear(llama_get_memory(ctx_.get()), true);
    for (auto & c : dft_cache_) c.clear();
}

void Speculator::draft_with_model(std::vector<DraftJob *> & jobs) {
    llama_context * ctx = ctx_.get();
    llama_memory_t mem = llama_get_memory(ctx);
    const size_t n_ctx_seq = llama_n_ctx_seq(ctx);
    const llama_vocab * vocab = llama_model_get_vocab(model_.get());
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    const int32_t n_batch = int32_t(llama_n_batch(ctx));

    struct Run {
        DraftJob * job;
        std::vector<llama_token> todo;  // tokens to decode next: the history not yet here and `last`, then each proposal
        size_t done = 0;                // of `todo`, the tokens put in a batch
        int32_t row = -1;               // the row of its last token's logits in the batch just decoded
        bool active = true;
        bool proposes = true;           // false: it only catches up with part of the history this time
    };
    std::vector<Run> runs;
    // A history the draft sequence has not seen (a new request, a slot given to
    // another conversation) is caught up at most n_batch tokens per call, so a
    // long prompt does not hold up every slot's step at once; that slot drafts
    // once it has caught up.
    size_t budget = size_t(n_batch);
    for (DraftJob * j : jobs) {
        auto & cache = dft_cache_[size_t(j->seq)];
        const auto & history = *j->history;
        if (history.size() + size_t(j->n_max) + 2 > n_ctx_seq) continue;
        // Keep what the draft sequence shares with the slot's; the rest and `last` are decoded.
        size_t keep = common_prefix(cache, history);
        if (!llama_memory_seq_rm(mem, j->seq, llama_pos(keep), -1)) {
            llama_memory_seq_rm(mem, j->seq, -1, -1);
            keep = 0;
        }
        cache.resize(keep);
        Run r{j, std::vector<llama_token>(history.begin() + long(keep), history.end())};
        if (r.todo.size() + 1 > budget) {
            r.todo.resize(budget);
            r.proposes = false;
            budget = 0;
            if (!r.todo.empty()) runs.push_back(std::move(r));
            continue;
        }
        budget -= r.todo.size() + 1;
        r.todo.push_back(j->last);
        runs.push_back(std::move(r));
    }
    if (runs.empty()) return;

    // Greedy: a run's next proposal is the draft's top token, while it is likely enough.
    auto propose = [&](Run & r) {
        const float * logits = llama_get_logits_ith(ctx, r.row);
        r.row = -1;
        r.todo.clear();
        r.done = 0;
        r.active = false;
        int32_t best = 0;
        for (int32_t t = 1; t < n_vocab; ++t) {
            if (logits[t] > logits[best]) best = t;
        }
        if (cfg_.p_min > 0.0f) {
            double sum = 0.0;
            for (int32_t t = 0; t < n_vocab; ++t) sum += std::exp(double(logits[t] - logits[best]));
            if (1.0 / sum < double(cfg_.p_min)) return;
        }
        r.job->out.push_back(best);
        if (llama_vocab_is_eog(vocab, best) || int32_t(r.job->out.size()) >= r.job->n_max) return;
        r.todo.push_back(best);  // decoded next, to propose the one after it
        r.active = true;
    };

    // Each decode call takes up to n_batch tokens across the sequences; a run
    // whose tokens are all decoded proposes its next token, which the next call decodes.
    llama_batch batch = llama_batch_init(n_batch, 0, 1);
    bool ok = true;
    std::vector<std::pair<Run *, size_t>> taken;  // run, tokens it put in the batch
    while (ok) {
        batch.n_tokens = 0;
        taken.clear();
        for (auto & r : runs) {
            if (!r.active || r.done == r.todo.size() || batch.n_tokens >= n_batch) continue;
            const size_t pos0 = dft_cache_[size_t(r.job->seq)].size();
            const size_t from = r.done;
            while (r.done < r.todo.size() && batch.n_tokens < n_batch) {
                const bool last = r.done + 1 == r.todo.size();
                if (last) r.row = batch.n_tokens;
                batch_add(batch, r.todo[r.done], llama_pos(pos0 + (r.done - from)), r.job->seq, last);
                ++r.done;
            }
            taken.emplace_back(&r, r.done - from);
        }
        if (batch.n_tokens == 0) break;
        ok = llama_decode(ctx, batch) == 0;
        if (!ok) break;
        for (auto [r, n] : taken) {
            auto & cache = dft_cache_[size_t(r->job->seq)];
            cache.insert(cache.end(), r->todo.begin() + long(r->done - n), r->todo.begin() + long(r->done));
            if (r->done < r->todo.size()) continue;
            if (r->proposes) {
                propose(*r);
            } else {
                r->active = false;
            }
        }
    }
    llama_batch_free(batch);
    if (!ok) {
        forget_all();
        for (auto & r : runs) r.job->out.clear();
    }
}

}  // namespace kolosal
