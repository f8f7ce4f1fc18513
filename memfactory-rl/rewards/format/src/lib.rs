//! Reward `format` on the extracted \\boxed{} answer.
