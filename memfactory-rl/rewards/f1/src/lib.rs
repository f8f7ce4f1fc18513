//! Reward `f1` on the extracted \\boxed{} answer.
