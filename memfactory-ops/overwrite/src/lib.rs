//! MemAgent's memory overwrite op: the LM rewrites the memory from problem, previous memory and a chunk, capped to a token budget.
