#!/usr/bin/env python3
"""Writes tokenizer.json and tokenizer_config.json of the tiny byte-level model.

The tokenizer is byte-level BPE with no merges: one token per byte (GPT-2's byte-to-unicode
alphabet, ids 0..255) plus three special tokens (256 <|endoftext|>, 257 <|im_start|>,
258 <|im_end|>), and SmolLM2's ChatML chat template. Any text round-trips exactly.

    python3 make_tokenizer.py        # needs `pip install tokenizers`
"""
import json
import pathlib

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

HERE = pathlib.Path(__file__).parent
alphabet = pre_tokenizers.ByteLevel.alphabet()
# Order the 256 byte symbols by the byte they stand for, so id == byte value.
bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
cs = bs[:]
n = 0
for b in range(256):
    if b not in bs:
        bs.append(b)
        cs.append(256 + n)
        n += 1
byte_to_char = {b: chr(c) for b, c in zip(bs, cs)}
assert set(byte_to_char.values()) == set(alphabet)
vocab = {byte_to_char[b]: b for b in range(256)}
tok = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False, byte_fallback=False))
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
tok.decoder = decoders.ByteLevel()
tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
tok.save(str(HERE / "tokenizer.json"))

template = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
(HERE / "tokenizer_config.json").write_text(
    json.dumps(
        {
            "bos_token": None,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "chat_template": template,
            "model_max_length": 4096,
        },
        indent=2,
    )
    + "\n"
)

t = Tokenizer.from_file(str(HERE / "tokenizer.json"))
s = "Héllo, wörld! 42 \\boxed{7}"
ids = t.encode(s).ids
assert ids == list(s.encode("utf-8")), ids
assert t.decode(ids) == s
print("ok", t.get_vocab_size())
