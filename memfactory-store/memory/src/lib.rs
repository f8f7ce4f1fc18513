//! In-memory memory store: insertion-ordered items, exact top-k search (cosine or lexical).
