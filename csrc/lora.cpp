#include "lora.h"

#include "errors.h"
#include "log_sink.h"

#include <cmath>
#include <cstring>
#include <filesystem>

namespace kolosal {

namespace {

std::string adapter_meta(const llama_adapter_lora * a, const char * key) {
    char buf[1024];
    return llama_adapter_meta_val_str(a, key, buf, sizeof(buf)) >= 0 ? std::string(buf) : std::string();
}

void check_scale(float scale, const char * param) {
    if (!std::isfinite(scale)) throw InvalidParameterError(param, std::string("a LoRA scale in '") + param + "' is not a finite number");
}

}  // namespace

LoraSet::LoraSet(llama_model * model, const std::vector<LoraSpec> & specs) {
    for (size_t i = 0; i < specs.size(); ++i) {
        const LoraSpec & s = specs[i];
        check_scale(s.scale, "lora");
        std::error_code ec;
        if (s.path.empty() || !std::filesystem::is_regular_file(s.path, ec)) {
            throw ModelNotFoundError("LoRA adapter " + std::to_string(i) + ": file not found: " + s.path);
        }
        llama_adapter_lora * a = nullptr;
        std::string why;
        {
            ErrorCapture errors;
            a = llama_adapter_lora_init(model, s.path.c_str());
            why = errors.text();
        }
        if (!a) {
            throw InvalidModelError("LoRA adapter " + std::to_string(i) + " (" + s.path + ") cannot be used with this model: " +
                                    (why.empty() ? std::string("llama.cpp refused it") : why));
        }
        adapters_.emplace_back(a);
        ptrs_.push_back(a);
        LoraInfo info;
        info.id = int32_t(i);
        info.path = s.path;
        info.scale = s.scale;
        info.task_name = adapter_meta(a, "adapter.lora.task_name");
        info.prompt_prefix = adapter_meta(a, "adapter.lora.prompt_prefix");
        info_.push_back(std::move(info));
    }
}

std::vector<LoraInfo> LoraSet::list() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return info_;
}

void LoraSet::check(const LoraRequest & req) const {
    for (const auto & [id, scale] : req) {
        if (id < 0 || size_t(id) >= adapters_.size()) {
            throw InvalidParameterError("lora", "unknown LoRA adapter id " + std::to_string(id) + " in 'lora': " +
                                                    (adapters_.empty() ? std::string("this model has no adapters")
                                                                       : "this model's adapters are 0.." +
                                                                             std::to_string(adapters_.size() - 1)));
        }
        check_scale(scale, "lora");
    }
}

void LoraSet::set_global(const LoraRequest & req) {
    check(req);
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto & i : info_) i.scale = 0.0f;
    for (const auto & [id, scale] : req) info_[size_t(id)].scale = scale;
}

std::vector<float> LoraSet::resolve(const std::optional<LoraRequest> & req) const {
    std::vector<float> scales(adapters_.size(), 0.0f);
    if (req) {
        check(*req);
        for (const auto & [id, scale] : *req) scales[size_t(id)] = scale;
        return scales;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    for (size_t i = 0; i < info_.size(); ++i) scales[i] = info_[i].scale;
    return scales;
}

void LoraSet::apply(llama_context * ctx, const std::vector<float> & scales) const {
    std::vector<float> s(adapters_.size(), 0.0f);
    for (size_t i = 0; i < s.size() && i < scales.size(); ++i) s[i] = scales[i];
    llama_set_adapters_lora(ctx, const_cast<llama_adapter_lora **>(ptrs_.data()), ptrs_.size(), s.data());
}

bool lora_same(const std::vector<float> & a, const std::vector<float> & b) {
    const size_t n = std::max(a.size(), b.size());
    for (size_t i = 0; i < n; ++i) {
        const float x = i < a.size() ? a[i] : 0.0f;
        const float y = i < b.size() ? b[i] : 0.0f;
        if (x != y) return false;
    }
    return true;
}

uint64_t lora_tag(const std::vector<float> & scales) {
    // FNV-1a over the non-zero (index, scale) pairs: the same for configurations lora_same() calls equal.
    uint64_t h = 1469598103934665603ull;
    bool any = false;
    for (size_t i = 0; i < scales.size(); ++i) {
        if (scales[i] == 0.0f) continue;
        any = true;
        uint32_t bits;
        std::memcpy(&bits, &scales[i], sizeof(bits));
        const uint64_t words[2] = {uint64_t(i), uint64_t(bits)};
        for (uint64_t w : words) {
            for (int b = 0; b < 8; ++b) {
                h ^= (w >> (8 * b)) & 0xff;
                h *= 1099511628211ull;
            }
        }
    }
    return any ? (h == 0 ? 1 : h) : 0;
}

}  // namespace kolosal
