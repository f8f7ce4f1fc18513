//! Fuzzing the GGUF parser: mutated and truncated headers never panic, and every failure is
//! a typed `Error::Model`.

use std::path::Path;

use memfactory_core::Error;
use memfactory_lm_burn::gguf::Gguf;
use memfactory_lm_burn::gguf::write::{W, gguf};
use proptest::prelude::*;

fn seed_file() -> Vec<u8> {
    // Q4_1 block: f16 d, f16 m, 16 bytes.
    let q41: Vec<u8> = [
        half::f16::from_f32(0.5).to_le_bytes(),
        half::f16::from_f32(-1.0).to_le_bytes(),
    ]
    .concat()
    .into_iter()
    .chain((0..16u8).map(|j| j * 17))
    .collect();
    let f32s: Vec<u8> = (0..4).flat_map(|i| (i as f32).to_le_bytes()).collect();
    gguf(
        &[
            ("general.architecture", W::Str("llama")),
            ("llama.block_count", W::U32(1)),
            ("llama.rope.freq_base", W::F32(1e5)),
            (
                "tokenizer.ggml.tokens",
                W::StrArr(&["<|endoftext|>", "a", "b", "Ġa"]),
            ),
            ("tokenizer.ggml.token_type", W::I32Arr(&[3, 1, 1, 1])),
        ],
        &[
            ("blk.0.attn_q.weight", vec![32, 1], 3, q41),
            ("norm", vec![4], 0, f32s),
        ],
    )
}

fn check(buf: &[u8]) {
    match Gguf::parse(buf, Path::new("fuzz.gguf")) {
        Ok(g) => {
            // Whatever parsed must be readable without panicking.
            for t in &g.tensors {
                let _ = g.tensor_f32(buf, &t.name, Path::new("fuzz.gguf"));
            }
        }
        Err(e) => assert!(matches!(e, Error::Model { .. }), "{e:?}"),
    }
}

#[test]
fn seed_file_parses() {
    let buf = seed_file();
    let g = Gguf::parse(&buf, Path::new("seed.gguf")).unwrap();
    let (shape, v) = g
        .tensor_f32(&buf, "blk.0.attn_q.weight", Path::new("seed.gguf"))
        .unwrap();
    assert_eq!(shape, vec![1, 32]);
    assert_eq!(v[0], -1.0);
    assert_eq!(v[1], -0.5);
    assert_eq!(v[16], -1.0);
    assert_eq!(v[17], 0.5 - 1.0);
}

/// Inputs that once found bugs (or plausibly could): kept as plain tests.
#[test]
fn regressions() {
    let base = seed_file();
    let mut cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"GGUF".to_vec(),
        b"GGUF\x03\0\0\0".to_vec(),
        base[..24].to_vec(),
    ];
    // Tensor dims whose product overflows u64.
    let mut c = base.clone();
    if let Some(pos) = c.windows(19).position(|w| w == b"blk.0.attn_q.weight") {
        let dims_at = pos + 19 + 4;
        c[dims_at..dims_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        cases.push(c);
    }
    // Array of arrays of huge length.
    let mut c = b"GGUF\x03\0\0\0".to_vec();
    c.extend(0u64.to_le_bytes());
    c.extend(1u64.to_le_bytes());
    c.extend(1u64.to_le_bytes());
    c.push(b'k');
    c.extend(9u32.to_le_bytes());
    c.extend(9u32.to_le_bytes());
    c.extend(u64::MAX.to_le_bytes());
    cases.push(c);
    // Alignment zero.
    let mut c = b"GGUF\x03\0\0\0".to_vec();
    c.extend(0u64.to_le_bytes());
    c.extend(1u64.to_le_bytes());
    c.extend(17u64.to_le_bytes());
    c.extend(b"general.alignment");
    c.extend(4u32.to_le_bytes());
    c.extend(0u32.to_le_bytes());
    cases.push(c);
    for c in cases {
        check(&c);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_headers_never_panic(muts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut buf = seed_file();
        for (i, b) in muts {
            let at = i.index(buf.len());
            buf[at] = b;
        }
        check(&buf);
    }

    #[test]
    fn truncated_files_never_panic(cut in any::<prop::sample::Index>()) {
        let buf = seed_file();
        let n = cut.index(buf.len());
        check(&buf[..n]);
    }

    #[test]
    fn random_bytes_after_magic_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut buf = b"GGUF\x03\0\0\0".to_vec();
        buf.extend(tail);
        check(&buf);
    }
}
