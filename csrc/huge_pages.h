// Transparent huge pages for llama.cpp's large CPU buffers: the weights when
// they are read into memory, the KV cache and the compute buffers. With 4 KiB
// pages every pass over the weights walks tens of thousands of page table
// entries; with 2 MiB pages a small model's weights fit in the TLB.
//
// On Linux the module is linked with --wrap=posix_memalign (the allocator
// behind ggml_aligned_malloc): while a Scope is open on a thread, an aligned
// allocation of a huge page or more made there starts on a huge page boundary
// and is advised MADV_HUGEPAGE, so that the kernel backs it with huge pages
// when it is first touched (also where THP is "madvise", the default of many
// distributions). Elsewhere this does nothing.
#pragma once

#include <cstddef>

namespace kolosal::huge_pages {

// Whether the kernel gives anonymous memory huge pages on request: Linux with
// transparent huge pages not "never".
bool available();

// The huge page size (0 where there are none).
size_t page_size();

// Huge pages for the large aligned allocations this thread makes while the
// scope is open (when `on`); nests.
class Scope {
public:
    explicit Scope(bool on);
    ~Scope();
    Scope(const Scope &) = delete;
    Scope & operator=(const Scope &) = delete;

private:
    bool prev_;
};

}  // namespace kolosal::huge_pages
