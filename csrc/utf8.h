#pragma once

#include <string>

namespace kolosal {

// Length of the longest prefix of `s` that does not end inside a multi-byte
// UTF-8 sequence. Invalid bytes are let through (the binding replaces them).
inline size_t utf8_complete_prefix(const std::string & s) {
    const size_t n = s.size();
    // Look at most 3 bytes back for the lead byte of an unfinished sequence.
    for (size_t back = 1; back <= 4 && back <= n; ++back) {
        const unsigned char c = static_cast<unsigned char>(s[n - back]);
        if ((c & 0xC0) == 0x80) continue;  // continuation byte
        size_t need = 1;
        if ((c & 0xE0) == 0xC0) need = 2;
        else if ((c & 0xF0) == 0xE0) need = 3;
        else if ((c & 0xF8) == 0xF0) need = 4;
        return back < need ? n - back : n;
    }
    return n;
}

}  // namespace kolosal
