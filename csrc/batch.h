#pragma once

#include "llama.h"

namespace kolosal {

// Appends one token of sequence `seq` to a batch made by llama_batch_init.
inline void batch_add(llama_batch & b, llama_token tok, llama_pos pos, llama_seq_id seq, bool logits) {
    const int32_t i = b.n_tokens;
    b.token[i] = tok;
    b.pos[i] = pos;
    b.n_seq_id[i] = 1;
    b.seq_id[i][0] = seq;
    b.logits[i] = logits ? 1 : 0;
    b.n_tokens++;
}

}  // namespace kolosal
