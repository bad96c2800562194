// The Python module: classes, conversions and the single place where native
// errors become Python exceptions (classes defined in kolosal/errors.py).
#include "engine.h"
#include "huge_pages.h"
#include "cpu_kernels.h"
#include "errors.h"
#include "log_sink.h"
#include "memory_manager.h"
#include "profiler.h"

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>

namespace py = pybind11;
using namespace kolosal;

namespace {

#ifndef KOLOSAL_VERSION
#  define KOLOSAL_VERSION "0.0.0"
#endif

py::object error_class(const char * name) {
    return py::module_::import("kolosal.errors").attr(name);
}

// Text from the model may hold invalid UTF-8; never let that raise.
py::str to_str(const std::string & s) {
    return py::reinterpret_steal<py::str>(PyUnicode_DecodeUTF8(s.data(), Py_ssize_t(s.size()), "replace"));
}

void raise(const char * cls, const std::exception & e) {
    // A message may quote raw bytes (a grammar's input, a token's piece).
    py::object exc = error_class(cls)(to_str(e.what()));
    PyErr_SetObject(exc.get_type().ptr(), exc.ptr());
}

void translate(std::exception_ptr p) {
    try {
        if (p) std::rethrow_exception(p);
    } catch (const InvalidParameterError & e) {
        py::object exc = error_class("InvalidParameterError")(to_str(e.what()), py::arg("param") = to_str(e.param));
        PyErr_SetObject(exc.get_type().ptr(), exc.ptr());
    } catch (const ModelNotFoundError & e) { raise("ModelNotFoundError", e);
    } catch (const ModelPermissionError & e) { raise("ModelPermissionError", e);
    } catch (const WorkerUnreachableError & e) { raise("WorkerUnreachableError", e);
    } catch (const UnsupportedArchitectureError & e) { raise("UnsupportedArchitectureError", e);
    } catch (const InvalidModelError & e) { raise("InvalidModelError", e);
    } catch (const ModelLoadError & e) { raise("ModelLoadError", e);
    } catch (const OutOfMemoryError & e) { raise("OutOfMemoryError", e);
    } catch (const ContextOverflowError & e) { raise("ContextOverflowError", e);
    } catch (const EngineClosedError & e) { raise("EngineClosedError", e);
    } catch (const KolosalError & e) { raise("KolosalError", e);
    }
}

template <typename T>
T get(const py::handle & v, const char * name) {
    try {
        return v.cast<T>();
    } catch (const py::cast_error &) {
        throw InvalidParameterError(name, std::string("invalid '") + name + "': wrong type");
    }
}

GenParams params_from_dict(const py::dict & d) {
    GenParams p;
    for (auto item : d) {
        const std::string k = py::str(item.first);
        const py::handle v = item.second;
        if (v.is_none()) continue;
        if (k == "max_tokens") p.max_tokens = get<int32_t>(v, "max_tokens");
        else if (k == "temperature") p.temperature = get<float>(v, "temperature");
        else if (k == "top_k") p.top_k = get<int32_t>(v, "top_k");
        else if (k == "top_p") p.top_p = get<float>(v, "top_p");
        else if (k == "min_p") p.min_p = get<float>(v, "min_p");
        else if (k == "typical_p") p.typical_p = get<float>(v, "typical_p");
        else if (k == "repeat_penalty") p.repeat_penalty = get<float>(v, "repeat_penalty");
        else if (k == "presence_penalty") p.presence_penalty = get<float>(v, "presence_penalty");
        else if (k == "frequency_penalty") p.frequency_penalty = get<float>(v, "frequency_penalty");
        else if (k == "repeat_last_n") p.repeat_last_n = get<int32_t>(v, "repeat_last_n");
        else if (k == "seed") p.seed = get<uint32_t>(v, "seed");
        else if (k == "stop") p.stop = get<std::vector<std::string>>(v, "stop");
        else if (k == "ignore_eos") p.ignore_eos = get<bool>(v, "ignore_eos");
        else if (k == "logit_bias") p.logit_bias = get<std::vector<std::pair<int32_t, float>>>(v, "logit_bias");
        else if (k == "grammar") p.grammar = get<std::string>(v, "grammar");
        else if (k == "json_schema") p.json_schema = get<std::string>(v, "json_schema");
        else if (k == "n_probs") p.n_probs = get<int32_t>(v, "n_probs");
        else if (k == "logprobs") p.logprobs = get<bool>(v, "logprobs");
        else if (k == "preserved_tokens") p.preserved_tokens = get<std::vector<std::string>>(v, "preserved_tokens");
        else if (k == "dry_multiplier") p.dry_multiplier = get<float>(v, "dry_multiplier");
        else if (k == "dry_base") p.dry_base = get<float>(v, "dry_base");
        else if (k == "dry_allowed_length") p.dry_allowed_length = get<int32_t>(v, "dry_allowed_length");
        else if (k == "dry_penalty_last_n") p.dry_penalty_last_n = get<int32_t>(v, "dry_penalty_last_n");
        else if (k == "dry_sequence_breakers") p.dry_sequence_breakers = get<std::vector<std::string>>(v, "dry_sequence_breakers");
        else if (k == "xtc_probability") p.xtc_probability = get<float>(v, "xtc_probability");
        else if (k == "xtc_threshold") p.xtc_threshold = get<float>(v, "xtc_threshold");
        else if (k == "mirostat") p.mirostat = get<int32_t>(v, "mirostat");
        else if (k == "mirostat_tau") p.mirostat_tau = get<float>(v, "mirostat_tau");
        else if (k == "mirostat_eta") p.mirostat_eta = get<float>(v, "mirostat_eta");
        else if (k == "top_n_sigma") p.top_n_sigma = get<float>(v, "top_n_sigma");
        else if (k == "min_keep") p.min_keep = get<int32_t>(v, "min_keep");
        else if (k == "samplers") p.samplers = get<std::vector<std::string>>(v, "samplers");
        else if (k == "cache_prompt") p.cache_prompt = get<bool>(v, "cache_prompt");
        else if (k == "id_slot") p.id_slot = get<int32_t>(v, "id_slot");
        else if (k == "t_max_predict_ms") p.t_max_predict_ms = get<int32_t>(v, "t_max_predict_ms");
        else if (k == "n_keep") p.n_keep = get<int32_t>(v, "n_keep");
        else throw InvalidParameterError(k, "unknown generation parameter '" + k + "'");
    }
    return p;
}

py::dict usage_dict(const Usage & u) {
    py::dict d;
    d["prompt_tokens"] = u.prompt_tokens;
    d["cached_tokens"] = u.cached_tokens;
    d["completion_tokens"] = u.completion_tokens;
    d["total_tokens"] = u.prompt_tokens + u.completion_tokens;
    return d;
}

py::dict timings_dict(const Usage & u) {
    py::dict d;
    const int32_t prefilled = u.prompt_tokens - u.cached_tokens;
    d["queue_ms"] = u.queue_ms;
    d["ttft_ms"] = u.ttft_ms;
    d["prompt_ms"] = u.prompt_ms;
    d["prefill_tokens"] = prefilled;
    d["prefill_tokens_per_s"] = u.prompt_ms > 0 ? prefilled * 1000.0 / u.prompt_ms : 0.0;
    d["decode_ms"] = u.decode_ms;
    d["decode_tokens_per_s"] = (u.decode_ms > 0 && u.completion_tokens > 1) ? (u.completion_tokens - 1) * 1000.0 / u.decode_ms : 0.0;
    d["slot"] = u.slot;
    // speculative decoding, under llama-server's names
    d["draft_n"] = u.draft_tokens;
    d["draft_n_accepted"] = u.draft_accepted;
    d["context_shifts"] = u.context_shifts;
    return d;
}

// A request's parameters under llama-server's names (GET /slots).
py::dict params_dict(const GenParams & p) {
    py::dict d;
    d["n_predict"] = p.max_tokens;
    d["seed"] = p.seed ? int64_t(*p.seed) : int64_t(0xFFFFFFFF);
    d["temperature"] = p.temperature;
    d["top_k"] = p.top_k;
    d["top_p"] = p.top_p;
    d["min_p"] = p.min_p;
    d["typical_p"] = p.typical_p;
    d["repeat_penalty"] = p.repeat_penalty;
    d["repeat_last_n"] = p.repeat_last_n;
    d["presence_penalty"] = p.presence_penalty;
    d["frequency_penalty"] = p.frequency_penalty;
    d["dry_multiplier"] = p.dry_multiplier;
    d["dry_base"] = p.dry_base;
    d["dry_allowed_length"] = p.dry_allowed_length;
    d["dry_penalty_last_n"] = p.dry_penalty_last_n;
    d["xtc_probability"] = p.xtc_probability;
    d["xtc_threshold"] = p.xtc_threshold;
    d["mirostat"] = p.mirostat;
    d["mirostat_tau"] = p.mirostat_tau;
    d["mirostat_eta"] = p.mirostat_eta;
    d["top_n_sigma"] = p.top_n_sigma;
    d["min_keep"] = p.min_keep;
    d["samplers"] = p.samplers;
    d["stop"] = p.stop;
    d["ignore_eos"] = p.ignore_eos;
    d["n_probs"] = p.n_probs;
    d["grammar"] = p.grammar;
    d["json_schema"] = p.json_schema;
    d["cache_prompt"] = p.cache_prompt;
    d["id_slot"] = p.id_slot;
    d["t_max_predict_ms"] = p.t_max_predict_ms;
    d["n_keep"] = p.n_keep;
    return d;
}

py::list logprobs_list(const std::vector<TokenLogprob> & lps) {
    py::list out;
    for (const auto & lp : lps) {
        py::list top;
        // The raw bytes too: a byte-level token may hold part of a UTF-8 character.
        for (const auto & t : lp.top) top.append(py::make_tuple(t.token, to_str(t.text), t.logprob, py::bytes(t.text)));
        out.append(py::make_tuple(lp.token, to_str(lp.text), lp.logprob, top, py::bytes(lp.text)));
    }
    return out;
}

// The Python side of a Request. Dropping it (the handle garbage-collected,
// an iteration abandoned) cancels the request: nobody can read its output.
struct Generation {
    std::shared_ptr<Request> req;

    explicit Generation(std::shared_ptr<Request> r) : req(std::move(r)) {}
    Generation(Generation &&) noexcept = default;
    Generation(const Generation &) = delete;
    Generation & operator=(const Generation &) = delete;
    Generation & operator=(Generation &&) = delete;
    ~Generation() {
        if (req) req->cancelled.store(true);
    }

    // Next chunk as (text, token_ids, logprobs); None once generation has ended
    // and every chunk was taken. Raises TimeoutError after `timeout` seconds.
    py::object next_chunk(std::optional<double> timeout) {
        Chunk c;
        bool have = false, timed_out = false;
        {
            py::gil_scoped_release nogil;
            std::unique_lock<std::mutex> lock(req->mutex);
            auto ready = [&] { return !req->chunks.empty() || req->done; };
            if (timeout) {
                timed_out = !req->cv.wait_for(lock, std::chrono::duration<double>(*timeout), ready);
            } else {
                req->cv.wait(lock, ready);
            }
            if (!req->chunks.empty()) {
                c = std::move(req->chunks.front());
                req->chunks.pop_front();
                have = true;
            }
        }
        if (timed_out) {
            PyErr_SetString(PyExc_TimeoutError, "no output within the timeout");
            throw py::error_already_set();
        }
        if (!have) return py::none();
        py::list toks;
        for (int32_t t : c.tokens) toks.append(t);
        return py::make_tuple(to_str(c.text), toks, logprobs_list(c.logprobs));
    }
    bool done() {
        std::lock_guard<std::mutex> lock(req->mutex);
        return req->done && req->chunks.empty();
    }
    py::object finish_reason() {
        std::lock_guard<std::mutex> lock(req->mutex);
        if (!req->done) return py::none();
        return py::str(finish_name(req->finish));
    }
};

// A garbage-collected Engine closes itself, which joins its scheduler
// thread: other Python threads keep running meanwhile.
struct EngineDeleter {
    void operator()(Engine * e) const {
#if PY_VERSION_HEX >= 0x030D0000
        const bool finalizing = Py_IsFinalizing();
#else
        const bool finalizing = _Py_IsFinalizing();
#endif
        if (e->abandoned()) return;  // its thread may still use it (a lost RPC worker): kept until exit
        if (PyGILState_Check() && !finalizing) {
            py::gil_scoped_release nogil;
            delete e;
        } else {
            delete e;
        }
    }
};
using EngineHolder = std::unique_ptr<Engine, EngineDeleter>;

}  // namespace

PYBIND11_MODULE(_native, m) {
    m.doc() = "Kolosal native core: llama.cpp with continuous batching";
    m.attr("__version__") = KOLOSAL_VERSION;
    py::register_exception_translator(&translate);
    set_log_level(GGML_LOG_LEVEL_WARN);

    m.def("build_info_json", &build_info_json);
    m.def("huge_pages_available", &huge_pages::available,
          "Whether the kernel gives memory transparent huge pages on request (Linux, THP not 'never').");
    m.def("cpu_kernels", [] {
        py::list out;
        for (const auto & k : cpu_kernels::report()) {
            py::dict d;
            d["op"] = k.op;
            d["source"] = k.source;
            d["reason"] = k.reason;
            out.append(d);
        }
        return out;
    }, "Which CPU kernels kolosal put in place of llama.cpp's, and why not where it did not (installs them first).");
    m.def("cpu_kernel_mismatches", [](int n, int rows, int cols, uint32_t seed) -> py::object {
        size_t bad = 0;
        {
            py::gil_scoped_release nogil;
            bad = cpu_kernels::mismatches(n, rows, cols, seed);
        }
        if (bad == size_t(-1)) return py::none();
        return py::int_(bad);
    }, py::arg("n"), py::arg("rows"), py::arg("cols"), py::arg("seed") = 0,
          "kolosal's Q4_1 kernel against llama.cpp's on random data: the number of results that differ in any bit "
          "(None where kolosal has no kernel for this CPU or the sizes do not fit).");
    m.def("rpc_available", &rpc_available, "Whether this build has llama.cpp's RPC backend.");
    m.def("rpc_protocol_version", &rpc_protocol_version, "The RPC protocol version spoken: [major, minor, patch].");
    m.def("rpc_mark_lost", &rpc_mark_lost, py::arg("endpoints"), py::arg("what"),
          py::call_guard<py::gil_scoped_release>(), "Fails every engine using these workers now and refuses them until the process ends.");
    m.def("rpc_serve", &rpc_serve, py::arg("host"), py::arg("port"), py::arg("n_threads") = 0, py::arg("mem_mib") = 0,
          py::arg("cache_dir") = "", py::call_guard<py::gil_scoped_release>(),
          "Runs ggml's RPC server (CPU device) on host:port; returns only by raising when it cannot start.");
    m.def("default_samplers", &default_sampler_names, "llama.cpp's default sampler chain, by llama-server's names.");
    m.def("check_params", [](const py::dict & params) { validate(params_from_dict(params), INT32_MAX); }, py::arg("params"),
          "Validates generation parameters without a model (token ids are not checked against a vocabulary).");
    m.def("set_log_level", &set_log_level, py::arg("level"),
          "Threshold for llama.cpp's log output: 1 debug, 2 info, 3 warn, 4 error, 5 none.");
    m.def("set_log_capture", &set_log_capture, py::arg("capture"),
          "True: queue llama.cpp's log lines for take_log_records instead of writing them to stderr.");
    m.def("take_log_records", [](double timeout) {
        std::vector<LogRecord> recs;
        {
            py::gil_scoped_release nogil;
            recs = take_log_records(timeout);
        }
        py::list out;
        for (const auto & r : recs) out.append(py::make_tuple(r.level, to_str(r.text)));
        return out;
    }, py::arg("timeout"), "Queued (level, line) records; waits up to `timeout` seconds for the first.");

    py::class_<TimerStats>(m, "TimerStats")
        .def_readonly("count", &TimerStats::count)
        .def_readonly("total_ms", &TimerStats::total_ms)
        .def_readonly("min_ms", &TimerStats::min_ms)
        .def_readonly("max_ms", &TimerStats::max_ms)
        .def_property_readonly("mean_ms", &TimerStats::mean_ms)
        .def("__repr__", [](const TimerStats & s) {
            return "TimerStats(count=" + std::to_string(s.count) + ", total_ms=" + std::to_string(s.total_ms) +
                   ", mean_ms=" + std::to_string(s.mean_ms()) + ")";
        });

    py::class_<Profiler, std::shared_ptr<Profiler>>(m, "Profiler")
        .def(py::init<>())
        .def("start", &Profiler::start, py::arg("name"))
        .def("stop", &Profiler::stop, py::arg("name"), "Stops a timer; returns the elapsed milliseconds.")
        .def("record", &Profiler::record, py::arg("name"), py::arg("ms"))
        .def("stats", &Profiler::stats)
        .def("reset", &Profiler::reset);

    py::class_<ModelMemory>(m, "ModelMemory")
        .def_readonly("model_id", &ModelMemory::model_id)
        .def_readonly("path", &ModelMemory::path)
        .def_readonly("weights_bytes", &ModelMemory::weights_bytes)
        .def_readonly("kv_bytes", &ModelMemory::kv_bytes)
        .def_property_readonly("total_bytes", &ModelMemory::total);

    py::class_<MemoryManager, std::unique_ptr<MemoryManager, py::nodelete>>(m, "MemoryManager")
        .def(py::init([] { return &MemoryManager::instance(); }), py::return_value_policy::reference)
        .def("models", &MemoryManager::models, "Loaded models and their weights and KV bytes.")
        .def("models_bytes", &MemoryManager::models_bytes)
        .def_static("system", [] {
            const SystemMemory s = MemoryManager::system();
            py::dict d;
            d["total_bytes"] = s.total_bytes;
            d["available_bytes"] = s.available_bytes;
            d["used_bytes"] = s.used_bytes;
            return d;
        })
        .def_static("process", [] {
            const ProcessMemory p = MemoryManager::process();
            py::dict d;
            d["rss_bytes"] = p.rss_bytes;
            d["peak_rss_bytes"] = p.peak_rss_bytes;
            return d;
        })
        .def_static("estimate", [](const std::string & path, uint32_t n_ctx, int n_gpu_layers, const std::string & cache_type_k,
                                   const std::string & cache_type_v) {
            FootprintEstimate e;
            {
                py::gil_scoped_release nogil;
                e = MemoryManager::estimate(path, n_ctx, n_gpu_layers, cache_type_k, cache_type_v);
            }
            py::dict d;
            d["architecture"] = e.architecture;
            d["file_bytes"] = e.file_bytes;
            d["weights_bytes"] = e.weights_bytes;
            d["kv_bytes"] = e.kv_bytes;
            d["total_bytes"] = e.total_bytes;
            d["n_layer"] = e.n_layer;
            return d;
        }, py::arg("path"), py::arg("n_ctx"), py::arg("n_gpu_layers") = 0, py::arg("cache_type_k") = "f16",
           py::arg("cache_type_v") = "f16");

    py::class_<Generation>(m, "Generation")
        .def_property_readonly("id", [](Generation & g) { return g.req->id; })
        .def("next_chunk", &Generation::next_chunk, py::arg("timeout") = py::none())
        .def("cancel", [](Generation & g) {
            g.req->cancelled.store(true);
        })
        .def_property_readonly("done", &Generation::done)
        .def_property_readonly("finish_reason", &Generation::finish_reason)
        .def_property_readonly("error", [](Generation & g) -> py::object {
            std::lock_guard<std::mutex> lock(g.req->mutex);
            if (g.req->error.empty()) return py::none();
            return to_str(g.req->error);
        })
        .def_property_readonly("stop_word", [](Generation & g) -> py::object {
            std::lock_guard<std::mutex> lock(g.req->mutex);
            if (g.req->stop_word.empty()) return py::none();
            return to_str(g.req->stop_word);
        })
        .def_property_readonly("usage", [](Generation & g) {
            std::lock_guard<std::mutex> lock(g.req->mutex);
            return usage_dict(g.req->usage);
        })
        .def_property_readonly("timings", [](Generation & g) {
            std::lock_guard<std::mutex> lock(g.req->mutex);
            return timings_dict(g.req->usage);
        });

    py::class_<ChatPrompt>(m, "ChatPrompt")
        .def_property_readonly("prompt", [](const ChatPrompt & c) { return to_str(c.prompt); })
        .def_property_readonly("grammar", [](const ChatPrompt & c) { return c.params.grammar; })
        .def_property_readonly("grammar_lazy", [](const ChatPrompt & c) { return c.params.grammar_lazy; })
        .def_property_readonly("additional_stops", [](const ChatPrompt & c) { return c.params.additional_stops; })
        .def_property_readonly("format", [](const ChatPrompt & c) { return std::string(common_chat_format_name(c.params.format)); })
        .def_property_readonly("parse_tool_calls", [](const ChatPrompt & c) { return c.parse_tool_calls; })
        .def_property_readonly("extract_reasoning", [](const ChatPrompt & c) { return c.extract_reasoning; })
        .def_property_readonly("thinking_start_tag", [](const ChatPrompt & c) { return c.params.thinking_start_tag; })
        .def_property_readonly("generation_prompt", [](const ChatPrompt & c) { return to_str(c.params.generation_prompt); });

    py::class_<LoadProgress, std::shared_ptr<LoadProgress>>(m, "LoadProgress",
            "A model load's progress, passed to Engine(progress=...): updated by llama.cpp as the weights are read.")
        .def(py::init<>())
        .def_property_readonly("value", [](const LoadProgress & p) { return p.value.load(std::memory_order_relaxed); },
                               "0..1: share of the weights read so far")
        .def_property_readonly("updates", [](const LoadProgress & p) { return p.updates.load(std::memory_order_relaxed); },
                               "how many times llama.cpp reported progress");

    py::class_<Engine, EngineHolder>(m, "Engine")
        .def(py::init([](const std::string & model_path, const std::string & model_id, uint32_t n_ctx, int32_t n_parallel,
                         int32_t n_batch, int32_t n_ubatch, int32_t n_threads, int32_t n_threads_batch, int32_t n_gpu_layers,
                         int32_t main_gpu, std::vector<float> tensor_split, bool use_mmap, bool use_mlock, bool huge_pages, bool pair_ubatches, bool embeddings,
                         std::optional<uint32_t> seed, const std::string & flash_attn, bool kv_unified,
                         const std::string & chat_template, float slot_prompt_similarity, int64_t cache_ram_mib,
                         std::shared_ptr<LoadProgress> progress, std::vector<std::string> rpc_servers, const std::string & cache_type_k,
                         const std::string & cache_type_v, bool context_shift,
                         const std::vector<std::pair<std::string, float>> & lora, const std::string & spec_type,
                         const std::string & draft_model, int32_t n_draft, int32_t draft_min, float p_min,
                         int32_t spec_ngram_n) {
                 EngineConfig c;
                 for (const auto & [path, scale] : lora) c.lora.push_back({path, scale});
                 c.spec.type = spec_type;
                 c.spec.draft_model = draft_model;
                 c.spec.n_draft = n_draft;
                 c.spec.n_min = draft_min;
                 c.spec.p_min = p_min;
                 c.spec.ngram_n = spec_ngram_n;
                 c.model_path = model_path;
                 c.model_id = model_id;
                 c.n_ctx = n_ctx;
                 c.n_parallel = n_parallel;
                 c.n_batch = n_batch;
                 c.n_ubatch = n_ubatch;
                 c.n_threads = n_threads;
                 c.n_threads_batch = n_threads_batch;
                 c.n_gpu_layers = n_gpu_layers;
                 c.main_gpu = main_gpu;
                 c.tensor_split = std::move(tensor_split);
                 c.use_mmap = use_mmap;
                 c.use_mlock = use_mlock;
                 c.huge_pages = huge_pages;
                 c.pair_ubatches = pair_ubatches;
                 c.embeddings = embeddings;
                 c.seed = seed;
                 c.flash_attn = flash_attn;
                 c.kv_unified = kv_unified;
                 c.chat_template = chat_template;
                 c.slot_prompt_similarity = slot_prompt_similarity;
                 c.cache_ram_mib = cache_ram_mib;
                 c.progress = std::move(progress);
                 c.rpc_servers = std::move(rpc_servers);
                 c.cache_type_k = cache_type_k;
                 c.cache_type_v = cache_type_v;
                 c.context_shift = context_shift;
                 py::gil_scoped_release nogil;
                 return EngineHolder(new Engine(std::move(c)));
             }),
             py::arg("model_path"), py::arg("model_id"), py::arg("n_ctx"), py::arg("n_parallel"), py::arg("n_batch"),
             py::arg("n_ubatch"), py::arg("n_threads"), py::arg("n_threads_batch"), py::arg("n_gpu_layers"),
             py::arg("main_gpu"), py::arg("tensor_split"), py::arg("use_mmap"), py::arg("use_mlock"),
             py::arg("huge_pages"), py::arg("pair_ubatches"), py::arg("embeddings"), py::arg("seed"), py::arg("flash_attn"), py::arg("kv_unified"),
             py::arg("chat_template"), py::arg("slot_prompt_similarity") = 0.1f, py::arg("cache_ram_mib") = 2048,
             py::arg("progress") = py::none(), py::arg("rpc_servers") = std::vector<std::string>{}, py::arg("cache_type_k") = "f16", py::arg("cache_type_v") = "f16",
             py::arg("context_shift") = false, py::arg("lora") = std::vector<std::pair<std::string, float>>{},
             py::arg("spec_type") = "", py::arg("draft_model") = "", py::arg("n_draft") = 16, py::arg("draft_min") = 0,
             py::arg("p_min") = 0.0f, py::arg("spec_ngram_n") = 12)
        .def("close", &Engine::close, py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("failure", &Engine::failure)
        .def("devices", [](const Engine & e) {
            py::list out;
            for (const DeviceInfo & d : e.devices()) {
                py::dict x;
                x["name"] = d.name;
                x["kind"] = d.kind;
                x["description"] = to_str(d.description);
                if (!d.endpoint.empty()) x["endpoint"] = d.endpoint;
                x["memory_total_bytes"] = d.memory_total;
                x["memory_free_bytes"] = d.memory_free;
                out.append(x);
            }
            return out;
        }, "The local CPU, then each RPC worker's device (memory as at load time).")
        .def_property_readonly("closed", &Engine::closed)
        .def("info", [](const Engine & e) {
            const ModelInfo & i = e.info();
            py::dict d;
            d["architecture"] = i.architecture;
            d["name"] = i.name;
            d["description"] = i.description;
            d["n_params"] = i.n_params;
            d["size_bytes"] = i.size_bytes;
            d["n_ctx_train"] = i.n_ctx_train;
            d["n_vocab"] = i.n_vocab;
            d["n_embd"] = i.n_embd;
            d["n_layer"] = i.n_layer;
            d["chat_template"] = to_str(i.chat_template);
            d["chat_template_fallback"] = i.chat_template_fallback;
            d["n_ctx"] = i.n_ctx;
            d["n_ctx_slot"] = i.n_ctx_slot;
            d["n_parallel"] = i.n_parallel;
            d["n_threads"] = i.n_threads;
            d["n_gpu_layers"] = i.n_gpu_layers;
            d["kv_bytes"] = i.kv_bytes;
            d["cache_type_k"] = i.cache_type_k;
            d["cache_type_v"] = i.cache_type_v;
            d["context_shift"] = i.context_shift;
            d["use_mmap"] = i.use_mmap;
            d["huge_pages"] = i.huge_pages;
            d["pair_ubatches"] = i.pair_ubatches;
            return d;
        })
        .def("stats", [](const Engine & e) {
            const SchedulerStats s = e.stats();
            py::dict d;
            d["n_slots"] = s.n_slots;
            d["slots_busy"] = s.slots_busy;
            d["queued"] = s.queued;
            d["requests_done"] = s.requests_done;
            d["prompt_tokens"] = s.prompt_tokens;
            d["cached_tokens"] = s.cached_tokens;
            d["generated_tokens"] = s.generated_tokens;
            d["decode_calls"] = s.decode_calls;
            d["prompt_cache_bytes"] = s.prompt_cache_bytes;
            d["prompt_cache_entries"] = s.prompt_cache_entries;
            d["prompt_cache_limit_bytes"] = s.prompt_cache_limit_bytes;
            d["prompt_cache_saves"] = s.prompt_cache_saves;
            d["prompt_cache_restores"] = s.prompt_cache_restores;
            d["kv_purges"] = s.kv_purges;
            d["paired_ubatch_tokens"] = s.paired_ubatch_tokens;
            d["spec_draft_tokens"] = s.spec_draft_tokens;
            d["spec_accepted_tokens"] = s.spec_accepted_tokens;
            d["context_shifts"] = s.context_shifts;
            d["decode_aborts"] = s.decode_aborts;
            return d;
        })
        .def("slots", [](const Engine & e) {
            py::list out;
            for (const SlotState & s : e.slot_states()) {
                py::dict d;
                d["id"] = s.id;
                d["busy"] = s.busy;
                d["request_id"] = s.request_id;
                d["n_cached"] = s.n_cached;
                d["n_prompt"] = s.n_prompt;
                d["n_generated"] = s.n_generated;
                d["generating"] = s.generating;
                if (s.busy) d["params"] = params_dict(s.params);
                out.append(d);
            }
            return out;
        }, "Every slot now: busy or idle, its request, the tokens it holds.")
        .def_property_readonly("profiler", [](Engine & e) -> Profiler & { return e.profiler(); },
                               py::return_value_policy::reference_internal)
        .def("tokenize", &Engine::tokenize, py::arg("text"), py::arg("add_special") = true,
             py::arg("parse_special") = true, py::call_guard<py::gil_scoped_release>())
        .def("detokenize", [](const Engine & e, const std::vector<int32_t> & toks, bool special) {
            std::string s;
            {
                py::gil_scoped_release nogil;
                s = e.detokenize(toks, special);
            }
            return to_str(s);
        }, py::arg("tokens"), py::arg("special") = false)
        .def("token_to_piece", [](const Engine & e, int32_t t, bool special) {
            return py::bytes(e.token_to_piece(t, special));
        }, py::arg("token"), py::arg("special") = false)
        .def("submit", [](Engine & e, std::vector<int32_t> prompt, const py::dict & params, const ChatPrompt * chat,
                          std::optional<LoraRequest> lora) {
            GenParams p = params_from_dict(params);
            if (chat) {
                // The template's grammar already folds in json_schema / grammar and the tool-call format.
                if (!chat->params.grammar.empty()) {
                    p.grammar = chat->params.grammar;
                    p.json_schema.clear();
                    p.grammar_from_chat = true;
                    p.generation_prompt = chat->params.generation_prompt;
                }
                p.grammar_lazy = chat->params.grammar_lazy;
                p.grammar_triggers = chat->params.grammar_triggers;
                p.preserved_tokens = chat->params.preserved_tokens;
                for (const auto & s : chat->params.additional_stops) p.stop.push_back(s);
            }
            std::shared_ptr<Request> r;
            {
                py::gil_scoped_release nogil;
                r = e.submit(std::move(prompt), std::move(p), lora);
            }
            return Generation{r};
        }, py::arg("prompt"), py::arg("params"), py::arg("chat") = nullptr, py::arg("lora") = py::none())
        .def("submit_many", [](Engine & e, std::vector<std::vector<int32_t>> prompts, const py::dict & params,
                               std::optional<LoraRequest> lora) {
            GenParams p = params_from_dict(params);
            std::vector<std::shared_ptr<Request>> reqs;
            {
                py::gil_scoped_release nogil;
                reqs = e.submit_many(std::move(prompts), p, lora);
            }
            py::list out;
            for (auto & r : reqs) out.append(py::cast(Generation{r}));
            return out;
        }, py::arg("prompts"), py::arg("params"), py::arg("lora") = py::none())
        .def("lora_adapters", [](const Engine & e) {
            py::list out;
            for (const auto & a : e.lora_adapters()) {
                py::dict d;
                d["id"] = a.id;
                d["path"] = to_str(a.path);
                d["scale"] = a.scale;
                d["task_name"] = to_str(a.task_name);
                d["prompt_prefix"] = to_str(a.prompt_prefix);
                out.append(d);
            }
            return out;
        }, "The LoRA adapters with their global scales (llama-server's GET /lora-adapters shape).")
        .def("set_lora_adapters", &Engine::set_lora_adapters, py::arg("scales"),
             "Global scales as (id, scale) pairs; adapters not listed get 0.")
        .def("apply_chat_template", [](Engine & e, const std::string & messages_json, const std::string & tools_json,
                                       const std::string & tool_choice, bool parallel_tool_calls, bool add_generation_prompt,
                                       const std::string & json_schema, const std::string & grammar,
                                       const std::string & reasoning_format, bool enable_thinking,
                                       const std::string & chat_template_kwargs_json) {
            ChatTemplateOptions o;
            o.reasoning_format = reasoning_format;
            o.enable_thinking = enable_thinking;
            o.chat_template_kwargs_json = chat_template_kwargs_json;
            py::gil_scoped_release nogil;
            return e.apply_chat_template(messages_json, tools_json, tool_choice, parallel_tool_calls, add_generation_prompt,
                                         json_schema, grammar, o);
        }, py::arg("messages_json"), py::arg("tools_json") = "", py::arg("tool_choice") = "",
             py::arg("parallel_tool_calls") = false, py::arg("add_generation_prompt") = true, py::arg("json_schema") = "",
             py::arg("grammar") = "", py::arg("reasoning_format") = "auto", py::arg("enable_thinking") = true,
             py::arg("chat_template_kwargs_json") = "")
        .def("parse_chat_output", [](const Engine & e, const std::string & text, const ChatPrompt & cp, bool partial) {
            const ChatResult r = e.parse_chat_output(text, cp, partial);
            return py::make_tuple(to_str(r.content), to_str(r.reasoning_content), r.tool_calls_json);
        }, py::arg("text"), py::arg("chat"), py::arg("partial") = false)
        .def("chat_template_caps", &Engine::chat_template_caps)
        .def("embed", &Engine::embed, py::arg("texts"), py::arg("normalize") = true,
             py::call_guard<py::gil_scoped_release>());
}
