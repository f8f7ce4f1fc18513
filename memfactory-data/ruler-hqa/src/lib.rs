//! RULER-HotpotQA instances built from a HotpotQA JSON file, as MemAgent builds them.
