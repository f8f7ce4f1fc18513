//! Reward `exact-match` on the extracted \\boxed{} answer.
