//! The embedder on a tiny random BERT written by the test itself (WordPiece `tokenizer.json`,
//! `config.json`, F32 `model.safetensors`): the burn forward against a plain-Rust reference
//! forward of the same weights (HF `BertModel` maths + mean pooling + L2 norm), batching and
//! order, truncation, and every load / recipe error. Needs no downloaded model.

use std::collections::HashMap;
use std::path::Path;

use memfactory_core::{Cfg, Embedder, registry};
use memfactory_embed_minilm::MiniLm;
use safetensors::{Dtype, tensor::TensorView};
use serde_json::json;

const VOCAB: &[&str] = &[
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "dog", "runs",
    "fast", "hello", "world", "a", "##s", ".", "!", ",", "blue", "sky", "is", "red",
];
const D: usize = 8;
const HEADS: usize = 2;
const FF: usize = 16;
const LAYERS: usize = 2;
const MAX_POS: usize = 16;

fn config_json() -> serde_json::Value {
    json!({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
        "hidden_size": D, "intermediate_size": FF, "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS, "max_position_embeddings": MAX_POS,
        "type_vocab_size": 2, "vocab_size": VOCAB.len(), "layer_norm_eps": 1e-12,
        "position_embedding_type": "absolute"
    })
}

fn tokenizer_json() -> serde_json::Value {
    let vocab: serde_json::Map<String, serde_json::Value> = VOCAB
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), json!(i)))
        .collect();
    let special = |id: usize, t: &str| {
        json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    json!({
        "version": "1.0",
        // Like the real file: fixed padding and truncation the loader must switch off.
        "truncation": {"direction": "Right", "max_length": 128, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": 12}, "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]"),
                         special(3, "[SEP]"), special(4, "[MASK]")],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    })
}

/// Deterministic pseudo-random weights (SplitMix64 → uniform in [-scale, scale]).
fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// The tensors of the tiny model, PyTorch layout, names without `bert.`.
fn tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut t = Vec::new();
    let mut seed = 1u64;
    let mut add = |name: String, shape: Vec<usize>, kind: &str| {
        let n = shape.iter().product();
        seed += 1;
        let v = match kind {
            "gamma" => values(seed, n, 0.2).into_iter().map(|x| 1.0 + x).collect(),
            "bias" => values(seed, n, 0.1),
            _ => values(seed, n, 0.5),
        };
        t.push((name, shape, v));
    };
    add(
        "embeddings.word_embeddings.weight".into(),
        vec![VOCAB.len(), D],
        "w",
    );
    add(
        "embeddings.position_embeddings.weight".into(),
        vec![MAX_POS, D],
        "w",
    );
    add(
        "embeddings.token_type_embeddings.weight".into(),
        vec![2, D],
        "w",
    );
    add("embeddings.LayerNorm.weight".into(), vec![D], "gamma");
    add("embeddings.LayerNorm.bias".into(), vec![D], "bias");
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}.");
        for m in ["query", "key", "value"] {
            add(format!("{p}attention.self.{m}.weight"), vec![D, D], "w");
            add(format!("{p}attention.self.{m}.bias"), vec![D], "bias");
        }
        add(format!("{p}attention.output.dense.weight"), vec![D, D], "w");
        add(format!("{p}attention.output.dense.bias"), vec![D], "bias");
        add(
            format!("{p}attention.output.LayerNorm.weight"),
            vec![D],
            "gamma",
        );
        add(
            format!("{p}attention.output.LayerNorm.bias"),
            vec![D],
            "bias",
        );
        add(format!("{p}intermediate.dense.weight"), vec![FF, D], "w");
        add(format!("{p}intermediate.dense.bias"), vec![FF], "bias");
        add(format!("{p}output.dense.weight"), vec![D, FF], "w");
        add(format!("{p}output.dense.bias"), vec![D], "bias");
        add(format!("{p}output.LayerNorm.weight"), vec![D], "gamma");
        add(format!("{p}output.LayerNorm.bias"), vec![D], "bias");
    }
    add("pooler.dense.weight".into(), vec![D, D], "w");
    t
}

fn safetensors_bytes(ts: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = ts
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView<'_>)> = ts
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

/// Writes the tiny model into `dir`, with `ts` as its tensors.
fn write_model(dir: &Path, ts: &[(String, Vec<usize>, Vec<f32>)]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config_json().to_string()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json().to_string()).unwrap();
    std::fs::write(dir.join("model.safetensors"), safetensors_bytes(ts)).unwrap();
}

fn tiny_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_model(dir.path(), &tensors());
    dir
}

// ---- plain-Rust reference forward (HF BertModel + mean pooling + normalize) ----

fn layer_norm(x: &mut [f32], g: &[f32], b: &[f32]) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (var + 1e-12).sqrt();
    for (i, v) in x.iter_mut().enumerate() {
        *v = ((*v as f64 - mean) * inv) as f32 * g[i] + b[i];
    }
}

/// `W x + b` with `W` `[out, in]`.
fn dense(w: &[f32], b: &[f32], x: &[f32]) -> Vec<f32> {
    let inp = x.len();
    b.iter()
        .enumerate()
        .map(|(o, &bias)| {
            bias + w[o * inp..(o + 1) * inp]
                .iter()
                .zip(x)
                .map(|(a, c)| a * c)
                .sum::<f32>()
        })
        .collect()
}

fn erf(x: f64) -> f64 {
    // Abramowitz-Stegun 7.1.26 is too coarse; integrate the series instead (|x| small here).
    let mut sum = 0.0;
    let mut term = x;
    let mut n = 0.0;
    while term.abs() > 1e-17 && n < 200.0 {
        sum += term / (2.0 * n + 1.0);
        n += 1.0;
        term *= -x * x / n;
    }
    2.0 / std::f64::consts::PI.sqrt() * sum
}

fn reference(ids: &[u32]) -> Vec<f32> {
    let w: HashMap<String, Vec<f32>> = tensors().into_iter().map(|(n, _, v)| (n, v)).collect();
    let s = ids.len();
    let hd = D / HEADS;
    let mut x: Vec<Vec<f32>> = ids
        .iter()
        .enumerate()
        .map(|(p, &t)| {
            let t = t as usize;
            let mut e: Vec<f32> = (0..D)
                .map(|i| {
                    w["embeddings.word_embeddings.weight"][t * D + i]
                        + w["embeddings.token_type_embeddings.weight"][i]
                        + w["embeddings.position_embeddings.weight"][p * D + i]
                })
                .collect();
            layer_norm(
                &mut e,
                &w["embeddings.LayerNorm.weight"],
                &w["embeddings.LayerNorm.bias"],
            );
            e
        })
        .collect();
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}.");
        let g = |n: &str| &w[&format!("{p}{n}")];
        let proj = |m: &str| -> Vec<Vec<f32>> {
            x.iter()
                .map(|r| {
                    dense(
                        g(&format!("attention.self.{m}.weight")),
                        g(&format!("attention.self.{m}.bias")),
                        r,
                    )
                })
                .collect()
        };
        let (q, k, v) = (proj("query"), proj("key"), proj("value"));
        let mut ctx = vec![vec![0f32; D]; s];
        for h in 0..HEADS {
            let r = h * hd..(h + 1) * hd;
            for i in 0..s {
                let scores: Vec<f32> = (0..s)
                    .map(|j| {
                        q[i][r.clone()]
                            .iter()
                            .zip(&k[j][r.clone()])
                            .map(|(a, b)| a * b)
                            .sum::<f32>()
                            / (hd as f32).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f32::MIN, f32::max);
                let e: Vec<f32> = scores.iter().map(|x| (x - m).exp()).collect();
                let z: f32 = e.iter().sum();
                for (j, ej) in e.iter().enumerate() {
                    for c in r.clone() {
                        ctx[i][c] += ej / z * v[j][c];
                    }
                }
            }
        }
        for i in 0..s {
            let a = dense(
                g("attention.output.dense.weight"),
                g("attention.output.dense.bias"),
                &ctx[i],
            );
            let mut y: Vec<f32> = x[i].iter().zip(&a).map(|(p, q)| p + q).collect();
            layer_norm(
                &mut y,
                g("attention.output.LayerNorm.weight"),
                g("attention.output.LayerNorm.bias"),
            );
            let f: Vec<f32> = dense(
                g("intermediate.dense.weight"),
                g("intermediate.dense.bias"),
                &y,
            )
            .into_iter()
            .map(|v| (0.5 * v as f64 * (1.0 + erf(v as f64 / 2f64.sqrt()))) as f32)
            .collect();
            let f = dense(g("output.dense.weight"), g("output.dense.bias"), &f);
            let mut z: Vec<f32> = y.iter().zip(&f).map(|(p, q)| p + q).collect();
            layer_norm(
                &mut z,
                g("output.LayerNorm.weight"),
                g("output.LayerNorm.bias"),
            );
            x[i] = z;
        }
    }
    let mut mean = [0f32; D];
    for r in &x {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += v / s as f32;
        }
    }
    let n = mean.iter().map(|v| v * v).sum::<f32>().sqrt();
    mean.iter().map(|v| v / n).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const TEXTS: &[&str] = &[
    "Hello world!",
    "the cat sat on the mat.",
    "",
    "a dog runs fast, the sky is blue",
    "cats",
    "the red dog sat",
    "zebra",
    "THE CAT",
];

#[test]
fn burn_forward_matches_a_plain_reference() {
    let dir = tiny_dir();
    let m = MiniLm::load(dir.path(), "flex").unwrap();
    assert_eq!(m.dim(), D);
    // Tokenizer: specials added, lower-cased, `##s` continuation, unknown word -> [UNK],
    // no padding to the file's fixed 12.
    assert_eq!(m.token_ids("Hello world!").unwrap(), vec![2, 13, 14, 18, 3]);
    assert_eq!(m.token_ids("cats").unwrap(), vec![2, 6, 16, 3]);
    assert_eq!(m.token_ids("zebra").unwrap(), vec![2, 1, 3]);
    assert_eq!(m.token_ids("").unwrap(), vec![2, 3]);
    let got = m.embed(TEXTS).unwrap();
    assert_eq!(got.len(), TEXTS.len());
    for (t, e) in TEXTS.iter().zip(&got) {
        let want = reference(&m.token_ids(t).unwrap());
        let d = max_diff(e, &want);
        assert!(d < 2e-5, "{t:?}: max |diff| {d}\n got {e:?}\nwant {want:?}");
        let norm: f32 = e.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{t:?}: norm {norm}");
    }
    // Different texts give different vectors (the test can fail on a constant output).
    assert!(max_diff(&got[0], &got[1]) > 1e-2);
}

#[test]
fn batching_and_order_do_not_change_vectors() {
    let dir = tiny_dir();
    let mut m = MiniLm::load(dir.path(), "flex").unwrap();
    m.batch_size = 1;
    let one: Vec<Vec<f32>> = m.embed(TEXTS).unwrap();
    for bs in [2, 3, 32] {
        m.batch_size = bs;
        let got = m.embed(TEXTS).unwrap();
        for (i, (a, b)) in one.iter().zip(&got).enumerate() {
            assert!(
                max_diff(a, b) < 1e-5,
                "batch {bs}, text {i}: {}",
                max_diff(a, b)
            );
        }
    }
    // Reversed input: reversed output.
    let rev: Vec<&str> = TEXTS.iter().rev().copied().collect();
    let got = m.embed(&rev).unwrap();
    for (i, e) in got.iter().enumerate() {
        assert!(max_diff(e, &one[TEXTS.len() - 1 - i]) < 1e-5);
    }
    // Deterministic, and an empty call is fine.
    assert_eq!(m.embed(TEXTS).unwrap(), m.embed(TEXTS).unwrap());
    assert!(m.embed(&[]).unwrap().is_empty());
}

#[test]
fn long_texts_are_truncated_to_max_tokens() {
    let dir = tiny_dir();
    let mut m = MiniLm::load(dir.path(), "flex").unwrap();
    assert_eq!(
        m.max_tokens(),
        MAX_POS,
        "256 capped by max_position_embeddings"
    );
    let long = "the cat sat on the mat . ".repeat(20);
    let ids = m.token_ids(&long).unwrap();
    assert_eq!(ids.len(), MAX_POS);
    assert_eq!((ids[0], ids[MAX_POS - 1]), (2, 3), "[CLS] … [SEP] kept");
    m.set_max_tokens(6).unwrap();
    let ids = m.token_ids(&long).unwrap();
    assert_eq!(ids, vec![2, 5, 6, 7, 8, 3]);
    let e = m.embed(&[&long, "the cat sat on"]).unwrap();
    // Same 6 tokens after truncation -> same vector.
    assert!(max_diff(&e[0], &e[1]) < 1e-6);
    let err = m.set_max_tokens(MAX_POS + 1).unwrap_err().to_string();
    assert!(
        err.contains("max_tokens 17") && err.contains("2..=16"),
        "{err}"
    );
}

fn load_err(dir: &Path) -> String {
    let e = MiniLm::load(dir, "flex").unwrap_err();
    assert!(e.is_user_error(), "{e}");
    let s = e.to_string();
    assert!(!s.contains("panicked"), "{s}");
    s
}

#[test]
fn missing_files_name_the_path_and_the_fetch_command() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = load_err(&missing);
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(
        err.contains("memfactory model fetch all-minilm-l6-v2"),
        "{err}"
    );
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        let d = tiny_dir();
        std::fs::remove_file(d.path().join(f)).unwrap();
        let err = load_err(d.path());
        assert!(
            err.contains(&d.path().join(f).display().to_string()),
            "{f}: {err}"
        );
        assert!(
            err.contains("memfactory model fetch all-minilm-l6-v2"),
            "{f}: {err}"
        );
    }
}

#[test]
fn bad_safetensors_name_the_tensor() {
    let st = |d: &tempfile::TempDir| d.path().join("model.safetensors");
    // Truncated: the first tensor (in file order) whose bytes are cut off is named.
    let d = tiny_dir();
    let bytes = std::fs::read(st(&d)).unwrap();
    std::fs::write(st(&d), &bytes[..bytes.len() - 100]).unwrap();
    let err = load_err(d.path());
    assert!(
        err.contains("model.safetensors") && err.contains("truncated"),
        "{err}"
    );
    assert!(err.contains("tensor `"), "{err}");
    // Cut inside the header.
    std::fs::write(st(&d), &bytes[..20]).unwrap();
    let err = load_err(d.path());
    assert!(err.contains("not a valid safetensors file"), "{err}");

    // Missing tensor.
    let d = tempfile::tempdir().unwrap();
    let mut ts = tensors();
    ts.retain(|(n, _, _)| n != "encoder.layer.1.intermediate.dense.bias");
    write_model(d.path(), &ts);
    let err = load_err(d.path());
    assert!(
        err.contains("missing tensor `encoder.layer.1.intermediate.dense.bias`"),
        "{err}"
    );

    // Wrong shape.
    let d = tempfile::tempdir().unwrap();
    let mut ts = tensors();
    for t in ts.iter_mut() {
        if t.0 == "encoder.layer.0.attention.self.key.weight" {
            t.1 = vec![D / 2, D * 2];
        }
    }
    write_model(d.path(), &ts);
    let err = load_err(d.path());
    assert!(
        err.contains(
            "tensor `encoder.layer.0.attention.self.key.weight` has shape [4, 16], expected [8, 8]"
        ),
        "{err}"
    );

    // A `bert.`-prefixed file (as saved by BertModel checkpoints) loads the same.
    let d = tempfile::tempdir().unwrap();
    let ts: Vec<_> = tensors()
        .into_iter()
        .map(|(n, s, v)| (format!("bert.{n}"), s, v))
        .collect();
    write_model(d.path(), &ts);
    let a = MiniLm::load(d.path(), "flex")
        .unwrap()
        .embed(&["hello"])
        .unwrap();
    let b = MiniLm::load(tiny_dir().path(), "flex")
        .unwrap()
        .embed(&["hello"])
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn unsupported_config_names_file_and_key() {
    let d = tiny_dir();
    let mut c = config_json();
    c["hidden_act"] = json!("relu");
    std::fs::write(d.path().join("config.json"), c.to_string()).unwrap();
    let err = load_err(d.path());
    assert!(
        err.contains("config.json") && err.contains("`hidden_act` is `relu`"),
        "{err}"
    );
    // A tokenizer larger than the embedding.
    let d = tiny_dir();
    let mut c = config_json();
    c["vocab_size"] = json!(10);
    std::fs::write(d.path().join("config.json"), c.to_string()).unwrap();
    let err = load_err(d.path());
    assert!(err.contains("tokenizer has 24 tokens"), "{err}");
}

fn build(src: &str) -> memfactory_core::Result<(Box<dyn Embedder>, toml::Table)> {
    registry::build::<dyn Embedder>(Cfg::new("embedder", toml::from_str(src).unwrap()))
}

fn toml_path(p: &Path) -> String {
    p.display().to_string().replace('\\', "/")
}

#[test]
fn recipe_builds_through_the_registry() {
    let d = tiny_dir();
    let (e, resolved) = build(&format!(
        "kind = \"minilm\"\npath = \"{}\"\nbatch_size = 3",
        toml_path(d.path())
    ))
    .unwrap();
    assert_eq!(e.dim(), D);
    assert!(e.describe().contains("on flex"), "{}", e.describe());
    assert_eq!(resolved["kind"].as_str(), Some("minilm"));
    assert_eq!(resolved["device"].as_str(), Some("flex"));
    assert_eq!(resolved["batch_size"].as_integer(), Some(3));
    // Default 256, capped by the tiny model's 16 positions.
    assert_eq!(resolved["max_tokens"].as_integer(), Some(16));
    let v = e.embed(&["hello world"]).unwrap();
    assert_eq!((v.len(), v[0].len()), (1, D));
}

#[test]
fn recipe_errors_name_the_key() {
    let d = tiny_dir();
    let p = toml_path(d.path());
    let cases = [
        (
            "kind = \"minilm\"\npath = \"no/such/dir\"".to_string(),
            vec![
                "`embedder.path`",
                "no/such/dir",
                "memfactory model fetch all-minilm-l6-v2",
            ],
        ),
        (
            format!("kind = \"minilm\"\npath = \"{p}\"\ndevice = \"tpu\""),
            vec!["`embedder.device`", "unknown device `tpu`"],
        ),
        (
            format!("kind = \"minilm\"\npath = \"{p}\"\nbatch_size = 0"),
            vec!["`embedder.batch_size`", "positive"],
        ),
        (
            format!("kind = \"minilm\"\npath = \"{p}\"\nmax_tokens = 1"),
            vec![
                "`embedder.max_tokens`",
                "2..=16 (the model's max_position_embeddings)",
                "found 1",
            ],
        ),
        (
            format!("kind = \"minilm\"\npath = \"{p}\"\nmax_tokens = 100"),
            vec!["`embedder.max_tokens`", "found 100"],
        ),
        (
            format!("kind = \"minilm\"\npath = \"{p}\"\nbatchsize = 4"),
            vec!["`embedder.batchsize`", "unknown key"],
        ),
    ];
    #[cfg(not(feature = "wgpu"))]
    let cases = {
        let mut c = cases.to_vec();
        c.push((
            format!("kind = \"minilm\"\npath = \"{p}\"\ndevice = \"wgpu\""),
            vec!["`embedder.device`", "Cargo feature `wgpu`"],
        ));
        c
    };
    for (src, wants) in cases {
        let err = build(&src).err().expect(&src).to_string();
        for w in wants {
            assert!(err.contains(w), "{src}: missing {w:?} in {err}");
        }
    }
}
