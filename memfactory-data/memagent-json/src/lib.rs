//! Reads MemAgent / MemFactory eval files: JSON array or JSONL of {context, input, answers}.
