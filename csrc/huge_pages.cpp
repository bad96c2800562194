#include "huge_pages.h"

#include <cstdlib>
#include <fstream>
#include <string>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace kolosal::huge_pages {
namespace {

thread_local bool advise = false;

size_t read_page_size() {
#if defined(__linux__)
    std::ifstream mode("/sys/kernel/mm/transparent_hugepage/enabled");
    std::string line;
    if (!mode || !std::getline(mode, line) || line.find("[never]") != std::string::npos) return 0;
    std::ifstream size("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
    size_t bytes = 0;
    if (size >> bytes && bytes > 0) return bytes;
    return size_t(2) << 20;
#else
    return 0;
#endif
}

}  // namespace

size_t page_size() {
    static const size_t bytes = read_page_size();
    return bytes;
}

bool available() { return page_size() > 0; }

Scope::Scope(bool on) : prev_(advise) { advise = on && available(); }

Scope::~Scope() { advise = prev_; }

#if defined(KOLOSAL_WRAP_POSIX_MEMALIGN)
extern "C" int __real_posix_memalign(void ** ptr, size_t alignment, size_t size);

extern "C" int __wrap_posix_memalign(void ** ptr, size_t alignment, size_t size) {
    const size_t huge = advise ? page_size() : 0;
    if (huge == 0 || size < huge) return __real_posix_memalign(ptr, alignment, size);
    const int rc = __real_posix_memalign(ptr, alignment > huge ? alignment : huge, size);
    // Advice only: without it the memory is the same, in small pages.
    if (rc == 0) (void) madvise(*ptr, size - size % huge, MADV_HUGEPAGE);
    return rc;
}
#endif

}  // namespace kolosal::huge_pages
