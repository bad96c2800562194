#include "engine.h"

#include "errors.h"
#include "sampling.h"
#include "common.h"
#include "json.h"
#include "ggml-cpu.h"
#include "model_file.h"
#include "batch.h"
#include "huge_pages.h"
#include "cpu_kernels.h"

#include <cmath>
#include <random>

namespace kolosal {

namespace {

void backend_init_once() {
    static std::once_flag once;
    std::call_once(once, [] {
        llama_backend_init();
        ggml_backend_load_all();
        cpu_kernels::install();
    });
}

std::string meta_str(const llama_model * model, const char * key) {
    char buf[512];
    const int32_t n = llama_model_meta_val_str(model, key, buf, sizeof(buf));
    return n >= 0 ? std::string(buf) : std::string();
}

// A llama_batch freed when it goes out of scope.
struct OwnedBatch {
    explicit OwnedBatch(int32_t n) : batch(llama_batch_init(n, 0, 1)) {}
    ~OwnedBatch() { llama_batch_free(batch); }
    OwnedBatch(const OwnedBatch &) = delete;
    OwnedBatch & operator=(const OwnedBatch &) = delete;
    llama_batch batch;
};

}  // namespace

Engine::Engine(EngineConfig cfg) : cfg_(std::move(cfg)) {
    if (cfg_.n_parallel < 1 || cfg_.n_parallel > 256) throw InvalidParameterError("n_parallel", "n_parallel must be in [1, 256]");
    if (cfg_.n_batch < 1) throw InvalidParameterError("n_batch", "n_batch must be >= 1");
    if (cfg_.n_ubatch < 1 || cfg_.n_ubatch > cfg_.n_batch) throw InvalidParameterError("n_ubatch", "n_ubatch must be in [1, n_batch]");
    if (cfg_.n_batch < cfg_.n_parallel) throw InvalidParameterError("n_batch", "n_batch must be >= n_parallel (one decode step per slot fits in a batch)");
    if (cfg_.n_threads < 0) throw InvalidParameterError("n_threads", "n_threads must be >= 0 (0: automatic)");
    if (!(cfg_.slot_prompt_similarity >= 0.0f && cfg_.slot_prompt_similarity <= 1.0f)) {
        throw InvalidParameterError("slot_prompt_similarity", "slot_prompt_similarity must be in [0, 1]");
    }
    if (cfg_.cache_ram_mib < -1) throw InvalidParameterError("cache_ram_mib", "cache_ram_mib must be >= -1 (0: off, -1: no limit)");
    if (cfg_.flash_attn != "auto" && cfg_.flash_attn != "on" && cfg_.flash_attn != "off") {
        throw InvalidParameterError("flash_attn", "flash_attn must be 'auto', 'on' or 'off'");
    }
    const ggml_type type_k = ggml_type(kv_cache_type(cfg_.cache_type_k, "cache_type_k"));
    const ggml_type type_v = ggml_type(kv_cache_type(cfg_.cache_type_v, "cache_type_v"));
    // As llama.cpp decides: a quantized V cache is only read by flash attention ("auto" turns it on).
    if (ggml_is_quantized(type_v) && cfg_.flash_attn == "off") {
        throw InvalidParameterError("cache_type_v", "cache_type_v '" + cfg_.cache_type_v +
                                                        "' is quantized, which needs flash attention: set flash_attn to 'auto' or 'on'");
    }
    backend_init_once();
    const ModelFileInfo file = inspect_model_file(cfg_.model_path);
    // With flash attention a quantized cache row must be whole blocks of one head.
    const std::pair<ggml_type, int64_t> rows[] = {{type_k, file.head_dim_k}, {type_v, file.head_dim_v}};
    for (size_t i = 0; i < 2; ++i) {
        const ggml_type t = rows[i].first;
        const int64_t dim = rows[i].second;
        if (cfg_.flash_attn != "off" && ggml_is_quantized(t) && dim > 0 && dim % ggml_blck_size(t) != 0) {
            const char * param = i == 0 ? "cache_type_k" : "cache_type_v";
            throw InvalidParameterError(param, std::string(param) + " '" + ggml_type_name(t) + "' packs blocks of " +
                                                   std::to_string(ggml_blck_size(t)) + " values, which do not divide this model's head size " +
                                                   std::to_string(dim));
        }
    }

    // The weights (when read into memory), the KV cache and the compute
    // buffers are allocated while this scope is open: huge pages for them.
    const huge_pages::Scope huge(cfg_.huge_pages);
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = cfg_.n_gpu_layers;
    mp.main_gpu = cfg_.main_gpu;
    mp.load_mode = cfg_.use_mmap ? (cfg_.use_mlock ? LLAMA_LOAD_MODE_MMAP_MLOCK : LLAMA_LOAD_MODE_MMAP)
                                 : (cfg_.use_mlock ? LLAMA_LOAD_MODE_MLOCK : LLAMA_LOAD_MODE_NONE);
    std::vector<float> split(llama_max_devices(), 0.0f);
    if (!cfg_.tensor_split.empty()) {
        if (cfg_.tensor_split.size() > split.size()) {
            throw InvalidParameterError("tensor_split", "tensor_split has more entries than devices (" + std::to_string(split.size()) + ")");
        }
        std::copy(cfg_.tensor_split.begin(), cfg_.tensor_split.end(), split.begin());
        mp.tensor_split = split.data();
    }
    if (cfg_.progress) {
        mp.progress_callback = &LoadProgress::callback;
        mp.progress_callback_user_data = cfg_.progress.get();
    }
    // RPC workers: their devices first (as llama.cpp orders them), then local
    // GPUs; layers go to them (all unless n_gpu_layers says otherwise).
    std::vector<ggml_backend_dev_t> devices;
    if (!cfg_.rpc_servers.empty()) {
        devices = rpc_devices(cfg_.rpc_servers);
        for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
            ggml_backend_dev_t d = ggml_backend_dev_get(i);
            const auto t = ggml_backend_dev_type(d);
            if (t == GGML_BACKEND_DEVICE_TYPE_GPU || t == GGML_BACKEND_DEVICE_TYPE_IGPU) devices.push_back(d);
        }
        devices.push_back(nullptr);
        mp.devices = devices.data();
        if (mp.n_gpu_layers == 0) mp.n_gpu_layers = -1;
        rpc_watch_ = std::make_unique<RpcFailureWatch>(cfg_.rpc_servers, [this](const std::string & why) { lose_worker(why); });
    }
    model_.reset(llama_model_load_from_file(cfg_.model_path.c_str(), mp));
    if (!model_) throw ModelLoadError("llama.cpp could not load the model: " + cfg_.model_path);
    vocab_ = llama_model_get_vocab(model_.get());
    if (ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU)) devices_.push_back(describe_device(cpu));
    for (ggml_backend_dev_t d : devices) {
        if (d) devices_.push_back(describe_device(d));
    }

    const int32_t n_threads = cfg_.n_threads > 0 ? cfg_.n_threads : common_cpu_get_num_math();
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = cfg_.n_ctx;
    cp.n_batch = uint32_t(cfg_.n_batch);
    cp.n_ubatch = uint32_t(cfg_.n_ubatch);
    cp.n_seq_max = uint32_t(cfg_.n_parallel);
    cp.n_threads = n_threads;
    cp.n_threads_batch = cfg_.n_threads_batch > 0 ? cfg_.n_threads_batch : n_threads;
    cp.kv_unified = cfg_.kv_unified;
    cp.type_k = type_k;
    cp.type_v = type_v;
    cp.no_perf = true;
    cp.flash_attn_type = cfg_.flash_attn == "on" ? LLAMA_FLASH_ATTN_TYPE_ENABLED
                       : cfg_.flash_attn == "off" ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                                                  : LLAMA_FLASH_ATTN_TYPE_AUTO;

    // KV cache size from the GGUF's key/value head sizes (not n_embd / n_head:
    // many models have heads wider or narrower than that).
    info_.n_layer = llama_model_n_layer(model_.get());
    const int64_t n_head_kv = file.n_head_kv > 0 ? file.n_head_kv : llama_model_n_head_kv(model_.get());
    const uint32_t n_ctx_eff = cfg_.n_ctx ? cfg_.n_ctx : uint32_t(llama_model_n_ctx_train(model_.get()));
    info_.kv_bytes = kv_cache_bytes(info_.n_layer, n_head_kv, file.head_dim_k, file.head_dim_v, n_ctx_eff, type_k, type_v);
    const SystemMemory sys = MemoryManager::system();
    if (cfg_.n_gpu_layers == 0 && sys.total_bytes > 0 && info_.kv_bytes > sys.total_bytes) {
        throw OutOfMemoryError("not enough memory for the KV cache: n_ctx=" + std::to_string(n_ctx_eff) + " needs " +
                               std::to_string(info_.kv_bytes >> 20) + " MiB, the system has " +
                               std::to_string(sys.total_bytes >> 20) + " MiB");
    }
    ctx_.reset(llama_init_from_model(model_.get(), cp));
    if (!ctx_ && (ggml_is_quantized(type_k) || ggml_is_quantized(type_v) || type_k != type_v)) {
        throw ModelLoadError("could not create the context (KV cache " + std::to_string(info_.kv_bytes >> 20) +
                             " MiB) with cache_type_k '" + cfg_.cache_type_k + "' and cache_type_v '" + cfg_.cache_type_v +
                             "' (flash_attn '" + cfg_.flash_attn +
                             "'): the backend cannot use these KV cache types for this model, or memory ran out");
    }
    if (!ctx_) {
        throw OutOfMemoryError("could not allocate the context (KV cache " + std::to_string(info_.kv_bytes >> 20) +
                               " MiB for n_ctx=" + std::to_string(n_ctx_eff) + ")");
    }

    // A persistent thread pool (as llama-bench uses): without one, every decode
    // call would start and join its worker threads.
    ggml_threadpool_params tpp = ggml_threadpool_params_default(cp.n_threads);
    threadpool_.reset(ggml_threadpool_new(&tpp));
    if (cp.n_threads_batch != cp.n_threads) {
        ggml_threadpool_params tpb = ggml_threadpool_params_default(cp.n_threads_batch);
        threadpool_batch_.reset(ggml_threadpool_new(&tpb));
    }
    if (threadpool_) llama_attach_threadpool(ctx_.get(), threadpool_.get(), threadpool_batch_.get());

    const llama_model * model = model_.get();
    char desc[256];
    llama_model_desc(model, desc, sizeof(desc));
    info_.architecture = meta_str(model, "general.architecture");
    info_.name = meta_str(model, "general.name");
    info_.description = desc;
    info_.n_params = llama_model_n_params(model);
    info_.size_bytes = llama_model_size(model);
    info_.n_ctx_train = llama_model_n_ctx_train(model);
    info_.n_vocab = llama_vocab_n_tokens(vocab_);
    info_.n_embd = llama_model_n_embd(model);
    info_.n_ctx = llama_n_ctx(ctx_.get());
    info_.n_ctx_slot = llama_n_ctx_seq(ctx_.get());
    info_.n_parallel = cfg_.n_parallel;
    info_.n_threads = n_threads;
    info_.n_gpu_layers = cfg_.n_gpu_layers;
    info_.has_encoder = llama_model_has_encoder(model);
    info_.kv_bytes = kv_cache_bytes(info_.n_layer, n_head_kv, file.head_dim_k, file.head_dim_v, info_.n_ctx, type_k, type_v);
    info_.cache_type_k = cfg_.cache_type_k;
    info_.cache_type_v = cfg_.cache_type_v;
    info_.use_mmap = cfg_.use_mmap;
    info_.huge_pages = cfg_.huge_pages && huge_pages::available();

    if (!cfg_.chat_template.empty()) {
        // The caller's own template: one that does not parse is their error, not a reason to use another.
        try {
            templates_ = common_chat_templates_init(model, cfg_.chat_template);
        } catch (const std::exception & e) {
            throw InvalidParameterError("chat_template", std::string("the chat_template does not parse: ") + e.what());
        }
    } else {
        try {
            templates_ = common_chat_templates_init(model, "");
        } catch (const std::exception &) {
            // The model's template does not parse with the Jinja engine: use ChatML.
            templates_ = common_chat_templates_init(model, "chatml");
            info_.chat_template_fallback = true;
        }
        if (!llama_model_chat_template(model, nullptr)) info_.chat_template_fallback = true;
    }
    info_.chat_template = common_chat_templates_source(templates_.get());

    seed_ = cfg_.seed ? *cfg_.seed : std::random_device{}();
    if (cfg_.embeddings) init_embedding_context();

    lora_ = std::make_unique<LoraSet>(model_.get(), cfg_.lora);
    if (!cfg_.spec.type.empty()) {
        SpecConfig sc = cfg_.spec;
        sc.n_threads = n_threads;
        if (sc.n_gpu_layers == 0) sc.n_gpu_layers = cfg_.n_gpu_layers;
        spec_ = std::make_unique<Speculator>(sc, model_.get(), info_.n_ctx_slot, cfg_.n_parallel);
        // A context without a thread pool starts and joins its threads on every decode.
        spec_->attach(threadpool_.get(), threadpool_batch_.get());
    }

    ModelMemory mm;
    mm.model_id = cfg_.model_id.empty() ? cfg_.model_path : cfg_.model_id;
    mm.path = cfg_.model_path;
    mm.weights_bytes = info_.size_bytes + (spec_ ? spec_->draft_bytes() : 0);  // with the draft model's
    mm.kv_bytes = info_.kv_bytes;
    mem_ = MemoryRegistration(mm);


    SchedulerOptions so;
    so.slot_prompt_similarity = cfg_.slot_prompt_similarity;
    so.cache_ram_bytes = cfg_.cache_ram_mib < 0 ? SIZE_MAX : size_t(cfg_.cache_ram_mib) << 20;
    so.kv_unified = cfg_.kv_unified;
    so.lora = lora_.get();
    so.spec = spec_.get();
    so.context_shift = cfg_.context_shift;
    // Where ggml multiplies this model's weights with kolosal's Q4_1 kernel
    // (most of them Q4_1, on the CPU), which takes two columns at a time.
    so.pair_ubatches = cfg_.pair_ubatches && cfg_.n_gpu_layers == 0 && cfg_.rpc_servers.empty() && file.q4_1_bytes * 2 > file.tensor_bytes &&
                       cpu_kernels::q4_1_installed();
    info_.pair_ubatches = so.pair_ubatches;
    scheduler_ = std::make_unique<Scheduler>(ctx_.get(), model, cfg_.n_parallel, profiler_, so);
    {
        std::lock_guard<std::mutex> lock(fail_mutex_);
        sched_ = scheduler_.get();
        if (failed_) sched_->fail_all(failure_);
    }
    info_.context_shift = cfg_.context_shift && llama_memory_can_shift(llama_get_memory(ctx_.get()));
}

Engine::~Engine() { close(); }

void Engine::close() {
    std::lock_guard<std::mutex> close_lock(close_mutex_);  // a concurrent close() returns once this one is done
    if (!gate_.close()) return;
    closed_ = true;
    // A running embedding stops at its next graph node; it raises EngineClosedError.
    abort_embedding_ = true;
    // Calls in flight (tokenize, submit, embed, ...) leave before anything is
    // freed; with RPC, a call blocked on a lost worker never leaves.
    if (rpc_watch_) {
        while (!gate_.wait_idle_for(std::chrono::milliseconds(50)) && !failed_) {}
    } else {
        gate_.wait_idle();
    }
    if (spec_) spec_->abort();  // a draft being decoded stops too
    // Cancels every request and interrupts a running decode, then joins the thread.
    if (failed_ || (scheduler_ && !scheduler_->shutdown())) {
        // A lost RPC worker: the scheduler thread may be blocked for good in
        // llama.cpp, using the context, the model and this object. All of it
        // stays allocated (and the thread parked) until the process ends.
        abandoned_ = true;
        mem_.reset();
        return;
    }
    {
        std::lock_guard<std::mutex> lock(fail_mutex_);
        sched_ = nullptr;
    }
    scheduler_.reset();
    lora_.reset();  // adapters go before their model
    spec_.reset();
    mem_.reset();
    std::lock_guard<std::mutex> lock(embd_mutex_);
    embd_ctx_.reset();
    templates_.reset();
    ctx_.reset();
    threadpool_batch_.reset();
    threadpool_.reset();
    model_.reset();
    vocab_ = nullptr;
    rpc_watch_.reset();
}

std::string Engine::failure() const {
    std::lock_guard<std::mutex> lock(fail_mutex_);
    return failure_;
}

void Engine::lose_worker(const std::string & why) {
    // On ggml's connection thread (rpc.cpp): fail everything now, free nothing.
    std::lock_guard<std::mutex> lock(fail_mutex_);
    if (failure_.empty()) failure_ = why;
    failed_ = true;
    abort_embedding_ = true;
    if (sched_) sched_->fail_all(failure_);
}

bool Engine::abort_embedding(void * engine) {
    return static_cast<Engine *>(engine)->abort_embedding_.load();
}

SchedulerStats Engine::stats() const {
    auto pass = enter();
    return scheduler_->stats();
}

std::vector<SlotState> Engine::slot_states() const {
    auto pass = enter();
    return scheduler_->slot_states();
}

std::vector<int32_t> Engine::tokenize(const std::string & text, bool add_special, bool parse_special) {
    auto pass = enter();
    ScopedTimer t(profiler_, "tokenize");
    return common_tokenize(vocab_, text, add_special, parse_special);
}

std::string Engine::detokenize(const std::vector<int32_t> & tokens, bool special) const {
    auto pass = enter();
    for (int32_t t : tokens) {
        if (t < 0 || t >= info_.n_vocab) {
            throw InvalidParameterError("tokens", "token id " + std::to_string(t) + " is outside the vocabulary (0.." +
                                                      std::to_string(info_.n_vocab - 1) + ")");
        }
    }
    return common_detokenize(vocab_, tokens, special);
}

std::string Engine::token_to_piece(int32_t token, bool special) const {
    auto pass = enter();
    if (token < 0 || token >= info_.n_vocab) throw InvalidParameterError("token", "token id out of range");
    return common_token_to_piece(vocab_, token, special);
}

std::vector<LoraInfo> Engine::lora_adapters() const {
    auto pass = enter();
    return lora_->list();
}

void Engine::set_lora_adapters(const LoraRequest & scales) {
    auto pass = enter();
    lora_->set_global(scales);
}

std::shared_ptr<Request> Engine::make_request(std::vector<int32_t> prompt, GenParams params,
                                              const std::optional<LoraRequest> & lora) {
    if (failed_) throw WorkerUnreachableError(failure());
    if (prompt.empty()) throw InvalidParameterError("prompt", "the prompt is empty");
    for (int32_t t : prompt) {
        if (t < 0 || t >= info_.n_vocab) throw InvalidParameterError("prompt", "prompt token id " + std::to_string(t) + " is outside the vocabulary");
    }
    if (prompt.size() >= info_.n_ctx_slot) {
        throw ContextOverflowError("the prompt has " + std::to_string(prompt.size()) + " tokens but the context of one slot is " +
                                   std::to_string(info_.n_ctx_slot) + " tokens");
    }
    validate(params, info_.n_vocab);
    if (params.id_slot >= info_.n_parallel) {
        throw InvalidParameterError("id_slot", "invalid 'id_slot': " + std::to_string(params.id_slot) + " is not a slot (0.." +
                                                   std::to_string(info_.n_parallel - 1) + ")");
    }
    std::vector<float> lora_scales = lora_->resolve(lora);
    auto req = std::make_shared<Request>();
    req->lora = std::move(lora_scales);
    req->id = next_request_id_++;
    common_params_sampling sp = to_common(params, vocab_, seed_ + uint32_t(req->id), info_.n_ctx_slot);
    try {
        req->sampler = common_sampler_init(model_.get(), sp);
    } catch (const std::exception & e) {
        throw InvalidParameterError(params.json_schema.empty() ? "grammar" : "json_schema", std::string("invalid grammar: ") + e.what());
    }
    if (!req->sampler) throw InvalidParameterError("grammar", "invalid grammar");
    req->prompt = std::move(prompt);
    req->params = std::move(params);
    req->usage.prompt_tokens = int32_t(req->prompt.size());
    return req;
}

std::shared_ptr<Request> Engine::submit(std::vector<int32_t> prompt, GenParams params,
                                        const std::optional<LoraRequest> & lora) {
    auto pass = enter();
    auto req = make_request(std::move(prompt), std::move(params), lora);
    scheduler_->submit({req});
    return req;
}

std::vector<std::shared_ptr<Request>> Engine::submit_many(std::vector<std::vector<int32_t>> prompts, const GenParams & params,
                                                          const std::optional<LoraRequest> & lora) {
    auto pass = enter();
    std::vector<std::shared_ptr<Request>> reqs;
    try {
        for (auto & p : prompts) reqs.push_back(make_request(std::move(p), params, lora));
    } catch (...) {
        for (auto & r : reqs) {
            if (r->sampler) common_sampler_free(r->sampler);
            r->sampler = nullptr;
        }
        throw;
    }
    scheduler_->submit(reqs);
    return reqs;
}

ChatPrompt Engine::apply_chat_template(const std::string & messages_json, const std::string & tools_json,
                                       const std::string & tool_choice, bool parallel_tool_calls,
                                       bool add_generation_prompt, const std::string & json_schema,
                                       const std::string & grammar, const ChatTemplateOptions & opts) {
    auto pass = enter();
    ScopedTimer t(profiler_, "template");
    common_chat_templates_inputs in;
    try {
        in.messages = common_chat_msgs_parse_oaicompat(common_json::parse(messages_json));
    } catch (const std::exception & e) {
        throw InvalidParameterError("messages", std::string("invalid 'messages': ") + e.what());
    }
    if (in.messages.empty()) throw InvalidParameterError("messages", "'messages' must not be empty");
    if (!tools_json.empty()) {
        try {
            in.tools = common_chat_tools_parse_oaicompat(common_json::parse(tools_json));
        } catch (const std::exception & e) {
            throw InvalidParameterError("tools", std::string("invalid 'tools': ") + e.what());
        }
    }
    if (!tool_choice.empty()) {
        try {
            in.tool_choice = common_chat_tool_choice_parse_oaicompat(tool_choice);
        } catch (const std::exception & e) {
            throw InvalidParameterError("tool_choice", std::string("invalid 'tool_choice': ") + e.what());
        }
    }
    in.parallel_tool_calls = parallel_tool_calls;
    in.add_generation_prompt = add_generation_prompt;
    in.json_schema = json_schema;
    in.grammar = grammar;
    in.use_jinja = true;
    if (opts.reasoning_format == "none") in.reasoning_format = COMMON_REASONING_FORMAT_NONE;
    else if (opts.reasoning_format == "deepseek") in.reasoning_format = COMMON_REASONING_FORMAT_DEEPSEEK;
    else if (opts.reasoning_format == "auto") in.reasoning_format = COMMON_REASONING_FORMAT_AUTO;
    else throw InvalidParameterError("reasoning_format", "reasoning_format must be 'none', 'deepseek' or 'auto'");
    in.enable_thinking = opts.enable_thinking;
    if (!opts.chat_template_kwargs_json.empty()) {
        common_json kwargs;
        try {
            kwargs = common_json::parse(opts.chat_template_kwargs_json);
        } catch (const std::exception & e) {
            throw InvalidParameterError("chat_template_kwargs", std::string("invalid 'chat_template_kwargs': ") + e.what());
        }
        if (!kwargs.is_object()) throw InvalidParameterError("chat_template_kwargs", "'chat_template_kwargs' must be an object");
        for (const auto & item : kwargs.items()) in.chat_template_kwargs[item.key()] = item.value().dump();
    }
    ChatPrompt cp;
    try {
        cp.params = common_chat_templates_apply(templates_.get(), in);
    } catch (const std::exception & e) {
        throw InvalidParameterError("messages", std::string("the chat template could not render these messages: ") + e.what());
    }
    cp.prompt = cp.params.prompt;
    cp.parse_tool_calls = !in.tools.empty() && in.tool_choice != COMMON_CHAT_TOOL_CHOICE_NONE;
    cp.extract_reasoning = cp.params.supports_thinking && in.reasoning_format != COMMON_REASONING_FORMAT_NONE;
    return cp;
}

std::map<std::string, bool> Engine::chat_template_caps() const {
    auto pass = enter();
    return common_chat_templates_get_caps(templates_.get());
}

ChatResult Engine::parse_chat_output(const std::string & text, const ChatPrompt & cp, bool partial) const {
    ChatResult r;
    common_chat_parser_params pp(cp.params);
    pp.parse_tool_calls = cp.parse_tool_calls;
    if (!cp.params.parser.empty()) pp.parser.load(cp.params.parser);
    common_chat_msg msg;
    try {
        msg = common_chat_parse(text, partial, pp);
    } catch (const std::exception &) {
        // The model's output does not follow the expected format: return it as plain content
        // (a prefix that cannot be read yet: nothing).
        r.content = partial ? std::string() : text;
        r.tool_calls_json = "[]";
        return r;
    }
    r.content = msg.content;
    r.reasoning_content = msg.reasoning_content;
    common_json calls = common_json::array();
    int i = 0;
    for (const auto & tc : msg.tool_calls) {
        common_json fn = common_json::object();
        fn["name"] = tc.name;
        fn["arguments"] = tc.arguments;
        common_json call = common_json::object();
        call["id"] = tc.id.empty() ? "call_" + std::to_string(i) : tc.id;
        call["type"] = "function";
        call["function"] = fn;
        calls.push_back(call);
        ++i;
    }
    r.tool_calls_json = calls.dump();
    return r;
}

void Engine::init_embedding_context() {
    llama_context_params cp = llama_context_default_params();
    const uint32_t n = std::min<uint32_t>(std::max<uint32_t>(info_.n_ctx_slot, 512), uint32_t(std::max(info_.n_ctx_train, 512)));
    cp.n_ctx = n;
    cp.n_batch = n;
    cp.n_ubatch = n;  // non-causal models need the whole input in one ubatch
    cp.n_seq_max = 1;
    cp.n_threads = info_.n_threads;
    cp.n_threads_batch = info_.n_threads;
    cp.embeddings = true;
    cp.no_perf = true;
    cp.abort_callback = &Engine::abort_embedding;
    cp.abort_callback_data = this;
    // Generative models declare no pooling: average their token states.
    cp.pooling_type = LLAMA_POOLING_TYPE_UNSPECIFIED;
    const huge_pages::Scope huge(cfg_.huge_pages);
    embd_ctx_.reset(llama_init_from_model(model_.get(), cp));
    if (embd_ctx_ && llama_pooling_type(embd_ctx_.get()) == LLAMA_POOLING_TYPE_NONE) {
        embd_ctx_.reset();
        cp.pooling_type = LLAMA_POOLING_TYPE_MEAN;
        embd_ctx_.reset(llama_init_from_model(model_.get(), cp));
    }
    if (!embd_ctx_) throw OutOfMemoryError("could not allocate the embedding context");
}

int32_t Engine::pooled_size(enum llama_pooling_type pooling, int32_t n_cls_out, int32_t n_embd_out, int32_t n_embd) {
    // llama_get_embeddings_seq: float[n_cls_out] with rank pooling, float[n_embd] otherwise.
    if (pooling == LLAMA_POOLING_TYPE_RANK) return n_cls_out;
    return n_embd_out > 0 ? n_embd_out : n_embd;
}

std::vector<std::vector<float>> Engine::embed(const std::vector<std::string> & texts, bool normalize) {
    auto pass = enter();
    if (failed_) throw WorkerUnreachableError(failure());
    std::lock_guard<std::mutex> lock(embd_mutex_);
    if (!embd_ctx_) init_embedding_context();
    llama_context * ectx = embd_ctx_.get();
    const uint32_t n_ctx = llama_n_ctx(ectx);
    const enum llama_pooling_type pooling = llama_pooling_type(ectx);
    const int32_t n_out = pooled_size(pooling, int32_t(llama_model_n_cls_out(model_.get())),
                                      llama_model_n_embd_out(model_.get()), info_.n_embd);
    if (n_out <= 0) throw KolosalError("the model's classifier head has no outputs");
    std::vector<std::vector<float>> out;
    out.reserve(texts.size());
    OwnedBatch owned{static_cast<int32_t>(n_ctx)};
    llama_batch * batch = &owned.batch;
    for (size_t i = 0; i < texts.size(); ++i) {
        std::vector<int32_t> toks;
        {
            ScopedTimer t(profiler_, "tokenize");
            toks = common_tokenize(vocab_, texts[i], true, true);
        }
        if (toks.empty()) throw InvalidParameterError("input", "input " + std::to_string(i) + " is empty");
        if (toks.size() > n_ctx) {
            throw ContextOverflowError("input " + std::to_string(i) + " has " + std::to_string(toks.size()) +
                                       " tokens, the embedding context holds " + std::to_string(n_ctx));
        }
        batch->n_tokens = 0;
        for (size_t p = 0; p < toks.size(); ++p) batch_add(*batch, toks[p], llama_pos(p), 0, true);
        llama_memory_clear(llama_get_memory(ectx), true);
        int32_t ret;
        {
            ScopedTimer t(profiler_, "embed");
            ret = info_.has_encoder ? llama_encode(ectx, *batch) : llama_decode(ectx, *batch);
        }
        if (ret == 2 && abort_embedding_) throw EngineClosedError("the engine was closed during the embedding");
        if (ret != 0) throw KolosalError("embedding failed: llama_decode returned " + std::to_string(ret));
        const float * e = llama_get_embeddings_seq(ectx, 0);
        if (!e) throw KolosalError("the model returned no pooled embedding");
        std::vector<float> v(static_cast<size_t>(n_out));
        // Rank scores are not a direction: they are returned as they are.
        common_embd_normalize(e, v.data(), n_out, normalize && pooling != LLAMA_POOLING_TYPE_RANK ? 2 : -1);
        out.push_back(std::move(v));
    }
    return out;
}

}  // namespace kolosal
