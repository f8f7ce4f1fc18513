//! MemAgent paradigm: read the context chunk by chunk, overwrite a capped memory, answer in \\boxed{}.
