//! A deterministic scripted LM for tests: maps prompts to replies by rules, byte-level tokenizer.
