//! Reward `sub-em` on the extracted \\boxed{} answer.
