//! Native LM engine on burn: Llama/Qwen2/Qwen3 from HF safetensors or GGUF, batched KV-cache generation with log-probs, autodiff log-probs for training.
