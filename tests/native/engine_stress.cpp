// Stress driver for the sanitizer builds (scripts/sanitize.sh): threads call
// every Engine method while others submit, cancel and drop generations, then
// one thread closes the engine under them. Exits non-zero on a wrong result;
// memory and thread errors are the sanitizers' to report.
//
// Everything here is bounded, so that it ends on a small, busy machine under
// ThreadSanitizer too: requests wait for their end before more are sent, and
// the engine decodes with one thread by default (ggml's workers spin on each
// other at every graph node; starved of CPU by the callers, a two-thread
// decode took tens of seconds). ggml's own threading is not ours to check
// (tsan.supp).
#include "engine.h"
#include "errors.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

using namespace kolosal;

namespace {

std::atomic<int> failures{0};
const auto t0 = std::chrono::steady_clock::now();

// Progress on stderr with the seconds since the start: where a slow run is.
void note(const char * fmt, ...) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "[%7.1f s] ", s);
    va_list ap;
    va_start(ap, fmt);
    std::vfprintf(stderr, fmt, ap);
    va_end(ap);
    std::fputc('\n', stderr);
}

void fail(const std::string & what) {
    std::fprintf(stderr, "FAIL: %s\n", what.c_str());
    failures++;
}

// Runs `call` until the engine is closed; any other error is a failure.
template <typename F>
void hammer(const char * name, std::atomic<int> & started, F call) {
    bool counted = false;
    for (;;) {
        try {
            call();
        } catch (const EngineClosedError &) {
            return;
        } catch (const std::exception & e) {
            fail(std::string(name) + ": " + e.what());
            return;
        }
        if (!counted) {
            counted = true;
            started++;
        }
    }
}

void wait_done(const std::shared_ptr<Request> & r) {
    std::unique_lock<std::mutex> lock(r->mutex);
    r->cv.wait(lock, [&] { return r->done; });
}

GenParams params(int32_t max_tokens) {
    GenParams p;
    p.max_tokens = max_tokens;
    p.temperature = 0.8f;
    p.ignore_eos = true;
    return p;
}

// Many submits, cancels and abandoned requests; every request must end and the slots come back.
void submits_and_cancels(Engine & e, int rounds) {
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t) {
        ts.emplace_back([&, t] {
            const auto prompt = e.tokenize("Thread " + std::to_string(t) + " says:", true, true);
            for (int i = 0; i < rounds; ++i) {
                auto r = e.submit(prompt, params(4 + (i % 7)));
                if (i % 3 == 0) r->cancelled = true;
                if (i % 3 != 2) wait_done(r);
                else r->cancelled = true;  // abandoned, as a dropped handle does
            }
        });
    }
    for (auto & th : ts) th.join();
    for (int i = 0; i < 2000; ++i) {
        const SchedulerStats s = e.stats();
        if (s.slots_busy == 0 && s.queued == 0) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    fail("slots or queue still busy after every request ended");
}

void close_under_load(Engine & e) {
    std::atomic<int> started{0};
    const std::string text = "The quick brown fox jumps over the lazy dog. ";
    std::string long_text;
    for (int i = 0; i < 40; ++i) long_text += text;
    std::vector<std::shared_ptr<Request>> reqs;
    std::mutex reqs_mutex;
    std::vector<std::thread> ts;
    ts.emplace_back([&] { hammer("tokenize", started, [&] { e.tokenize(long_text, true, true); }); });
    ts.emplace_back([&] {
        const auto toks = e.tokenize(long_text, true, true);
        hammer("detokenize", started, [&] { e.detokenize(toks, false); });
    });
    ts.emplace_back([&] { hammer("token_to_piece", started, [&] { e.token_to_piece(42, false); }); });
    ts.emplace_back([&] { hammer("stats", started, [&] { e.stats(); }); });
    ts.emplace_back([&] { hammer("slot_states", started, [&] { e.slot_states(); }); });
    ts.emplace_back([&] { hammer("chat_template_caps", started, [&] { e.chat_template_caps(); }); });
    ts.emplace_back([&] {
        hammer("apply_chat_template", started, [&] {
            e.apply_chat_template(R"([{"role":"user","content":")" + long_text + R"("}])", "", "", false, true, "", "");
        });
    });
    // Short inputs: the first embedding must end before the close starts (an
    // embedding interrupted by close() is tested in test_engine_lifecycle.py).
    ts.emplace_back([&] { hammer("embed", started, [&] { e.embed({text, "fox"}, true); }); });
    ts.emplace_back([&] {
        const auto prompt = e.tokenize(text, true, true);
        size_t n_submitted = 0;
        hammer("submit", started, [&] {
            auto r = e.submit(prompt, params(16));
            {
                std::lock_guard<std::mutex> lock(reqs_mutex);
                reqs.push_back(r);
            }
            // At most a few in flight: the queue must not grow while the other callers start.
            if (++n_submitted % 4 == 0) wait_done(r);
        });
    });
    ts.emplace_back([&] {
        const auto prompt = e.tokenize(text, true, true);
        hammer("submit_many", started, [&] {
            auto rs = e.submit_many({prompt, prompt}, params(8));
            for (auto & r : rs) r->cancelled = true;
            // They leave the queue at the scheduler's next step. Without this
            // wait the queue grew by thousands (each with its sampler) while
            // the first embedding ran, and the decodes crawled behind them.
            for (auto & r : rs) wait_done(r);
        });
    });
    const int n_callers = int(ts.size());
    while (started.load() < n_callers && failures.load() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    note("close under load: %d callers running, closing", started.load());
    std::thread closer([&] { e.close(); });
    e.close();  // two closers at once
    closer.join();
    note("close under load: closed");
    for (auto & th : ts) th.join();
    for (auto & r : reqs) {
        wait_done(r);
        if (r->finish != Finish::cancelled && r->finish != Finish::length) {
            fail(std::string("request ended as '") + finish_name(r->finish) + "' " + r->error);
        }
    }
}

}  // namespace

int main(int argc, char ** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s MODEL.gguf [rounds] [decode threads]\n", argv[0]);
        return 2;
    }
    const int rounds = argc > 2 ? std::atoi(argv[2]) : 30;
    const int threads = argc > 3 ? std::atoi(argv[3]) : 1;
    EngineConfig cfg;
    cfg.model_path = argv[1];
    cfg.n_ctx = 2048;
    cfg.n_parallel = 4;
    cfg.n_batch = 512;
    cfg.n_ubatch = 512;
    cfg.n_threads = threads;
    cfg.seed = 1;
    {
        Engine e(cfg);
        note("submits and cancels: %d rounds on 4 threads", rounds);
        submits_and_cancels(e, rounds);
        note("submits and cancels: done");
        close_under_load(e);
        note("close under load: done");
    }
    {
        // An engine destroyed with generations in flight, without close().
        Engine e(cfg);
        auto r = e.submit(e.tokenize("Once upon a time", true, true), params(200));
        (void) r;
    }
    note("destroyed with a generation in flight: done");
    {
        // Speculative decoding inside continuous batching: the draft model (the
        // model itself) drafts for every slot while requests come, go and are
        // cancelled, and the engine is closed under load.
        EngineConfig sc = cfg;
        sc.spec.type = "draft";
        sc.spec.draft_model = argv[1];
        sc.spec.n_draft = 4;
        Engine e(sc);
        note("speculative: submits and cancels");
        submits_and_cancels(e, std::max(1, rounds / 3));
        note("speculative: close under load");
        close_under_load(e);
        note("speculative: done");
    }
    note("%s", failures.load() == 0 ? "stress: OK" : "stress: FAILED");
    return failures.load() == 0 ? 0 : 1;
}
