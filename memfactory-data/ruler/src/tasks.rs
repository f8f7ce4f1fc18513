//! Instance rendering: one RULER instance as a pure function of (parameters, instance seed,
//! haystack size), and the search for the haystack size that fills the token budget.

use std::collections::HashMap;
use std::collections::HashSet;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::rng::{bounded, sample_distinct, shuffle, unit_f64};
use crate::{NOISE, NeedleType, Params, Task, WORDS, needle};

/// One rendered instance, before it becomes a [`memfactory_core::Sample`].
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The haystack with its needles (or the word list / coded text).
    pub context: String,
    /// RULER's question.
    pub question: String,
    /// References.
    pub answers: Vec<String>,
    /// RULER's task instruction (the sentence before the context in its template).
    pub instruction: String,
    /// RULER's answer prefix (what its template puts after the question).
    pub answer_prefix: String,
    /// Relative position (0 = start, 1 = end) of the first needle of the first asked key
    /// (niah) or of the first assignment of the asked chain (vt).
    pub depth: Option<f64>,
    /// The asked keys (niah) — one entry per query, in the question's order.
    pub queries: Vec<String>,
    /// The haystack size this instance was rendered with (noise lines, uncommon words or
    /// Zipf sample size, by task).
    pub units: usize,
}

/// Renders the instance of `params.task` with instance seed `seed` and haystack size
/// `units`; `pairs` (cwe only) draws the vocabulary from word pairs instead of single
/// words. Everything is drawn from one ChaCha8 stream seeded with `seed`; content (keys,
/// values, chains, depths) is drawn before anything that depends on `units`.
pub fn render(params: &Params, seed: u64, units: usize, pairs: bool) -> Rendered {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    match params.task {
        Task::NiahSingle | Task::NiahMultikey | Task::NiahMultivalue | Task::NiahMultiquery => {
            render_niah(params, &mut rng, units)
        }
        Task::Vt => render_vt(params, &mut rng, units),
        Task::Cwe => render_cwe(params, &mut rng, units, pairs),
        Task::Fwe => render_fwe(params, &mut rng, units),
    }
}

/// Smallest haystack size the task accepts (0, except for fwe, where the three answers
/// must be strictly more frequent than every other coded word).
pub fn min_units(params: &Params) -> Option<usize> {
    match params.task {
        Task::Fwe => {
            let w = zipf_weights(params.fwe.alpha, params.fwe.vocab);
            let cap = max_units(params, false);
            (1..=cap).find(|n| {
                let c = |k: usize| (*n as f64 * w[k]) as usize;
                c(3) > c(4)
            })
        }
        _ => Some(0),
    }
}

/// Largest haystack size tried: 16 units per target token (every unit is several
/// characters, so no tokenizer packs that many), capped for cwe by its vocabulary (single
/// words, or word pairs when `pairs`).
pub fn max_units(params: &Params, pairs: bool) -> usize {
    let cap = params.tokens.saturating_mul(16).saturating_add(16);
    match params.task {
        Task::Cwe => {
            let space = vocabulary_space(pairs) as usize;
            cap.min(space.saturating_sub(params.cwe.common))
        }
        _ => cap,
    }
}

/// Finds the largest `n` in `min..=max` with `measure(n) <= target`, assuming `measure`
/// grows with `n`: secant steps towards the target, a gallop to bracket it, then
/// bisection. Returns `(n, measure(n))`, or `None` when even `min` is over the target.
pub fn fit<E>(
    min: usize,
    max: usize,
    target: usize,
    mut measure: impl FnMut(usize) -> Result<usize, E>,
) -> Result<Option<(usize, usize)>, E> {
    let mut cache: HashMap<usize, usize> = HashMap::new();
    let mut m = |n: usize| -> Result<usize, E> {
        if let Some(c) = cache.get(&n) {
            return Ok(*c);
        }
        let c = measure(n)?;
        cache.insert(n, c);
        Ok(c)
    };
    let c_min = m(min)?;
    if c_min > target {
        return Ok(None);
    }
    let max = max.max(min);
    // Invariants: m(lo) <= target; hi == max + 1 (unknown) or m(hi) > target.
    let mut lo = min;
    let mut hi = max + 1;
    let mut guess = min + 1;
    for _ in 0..4 {
        if lo + 1 >= hi {
            break;
        }
        let n = guess.clamp(lo + 1, hi - 1);
        let c = m(n)?;
        if c <= target {
            lo = n;
        } else {
            hi = n;
        }
        guess = if c > c_min {
            let slope = (c - c_min) as f64 / (n - min) as f64;
            min + ((target - c_min) as f64 / slope) as usize
        } else {
            n.saturating_mul(2)
        };
    }
    let mut step = ((lo - min) / 64).max(1);
    while hi == max + 1 && lo < max {
        let n = lo.saturating_add(step).min(max);
        if m(n)? <= target {
            lo = n;
            step = step.saturating_mul(2);
        } else {
            hi = n;
        }
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if m(mid)? <= target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(Some((lo, m(lo)?)))
}

// ---------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------

/// A 7-digit number (`1000000..=9999999`), as RULER's `numbers` needles.
fn number7<R: RngCore>(rng: &mut R) -> String {
    (1_000_000 + bounded(rng, 9_000_000)).to_string()
}

/// A version-4 UUID from 128 random bits (version and variant bits set), lowercase, as
/// Python's `uuid.UUID(int=getrandbits(128), version=4)`.
fn uuid4<R: RngCore>(rng: &mut R) -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
    b[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Draws a value of type `ty` that is not in `used` (and records it).
fn draw_unique<R: RngCore>(rng: &mut R, ty: NeedleType, used: &mut HashSet<String>) -> String {
    loop {
        let v = match ty {
            NeedleType::Numbers => number7(rng),
            NeedleType::Words => WORDS[bounded(rng, WORDS.len() as u64) as usize].to_string(),
            NeedleType::Uuids => uuid4(rng),
        };
        if used.insert(v.clone()) {
            return v;
        }
    }
}

/// Slot (insertion point among `units + 1`) of relative position `u` in `[0, 1]`.
fn slot(u: f64, units: usize) -> usize {
    ((u * (units + 1) as f64) as usize).min(units)
}

fn rel(slot: usize, units: usize) -> f64 {
    if units == 0 {
        0.0
    } else {
        slot as f64 / units as f64
    }
}

/// Noise lines with the given items inserted: `items[i] = (slot, text)`, already in the
/// order they must appear within a slot. Lines are joined by `"\n"`.
fn weave(units: usize, mut items: Vec<(usize, String)>) -> String {
    items.sort_by_key(|(s, _)| *s); // stable: keeps the given order within a slot
    let mut lines: Vec<&str> = Vec::with_capacity(units + items.len());
    let mut it = items.iter().peekable();
    for s in 0..=units {
        while let Some((_, text)) = it.next_if(|(slot, _)| *slot == s) {
            lines.push(text);
        }
        if s < units {
            lines.push(NOISE);
        }
    }
    lines.join("\n")
}

/// RULER's query list: `"a"`, or `"a, b, and c"` (`', '.join(q[:-1]) + ', and ' + q[-1]`).
fn join_queries(q: &[String]) -> String {
    match q {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{}, and {last}", init.join(", ")),
    }
}

// ---------------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------------

fn render_niah(p: &Params, rng: &mut ChaCha8Rng, units: usize) -> Rendered {
    let (k, v, q) = p.needle_counts();
    let n = &p.niah;
    let mut used = HashSet::new();
    let keys: Vec<String> = (0..k)
        .map(|_| draw_unique(rng, n.key_type, &mut used))
        .collect();
    let values: Vec<Vec<String>> = (0..k)
        .map(|_| {
            (0..v)
                .map(|_| draw_unique(rng, n.needle_type, &mut used))
                .collect()
        })
        .collect();
    // (key index, needle text), in RULER's shuffled order.
    let mut needles: Vec<(usize, String)> = Vec::with_capacity(k * v);
    for (i, key) in keys.iter().enumerate() {
        for value in &values[i] {
            needles.push((i, needle(n.needle_type, key, value)));
        }
    }
    shuffle(rng, &mut needles);
    let asked: Vec<usize> = sample_distinct(rng, k as u64, q)
        .into_iter()
        .map(|i| i as usize)
        .collect();
    let positions: Vec<f64> = needles
        .iter()
        .map(|_| n.depth.unwrap_or_else(|| unit_f64(rng)))
        .collect();
    let slots: Vec<usize> = positions.iter().map(|u| slot(*u, units)).collect();

    let first = asked[0];
    let depth = needles
        .iter()
        .zip(&slots)
        .filter(|((key, _), _)| *key == first)
        .map(|(_, s)| *s)
        .min()
        .map(|s| rel(s, units));
    let items = slots
        .iter()
        .zip(&needles)
        .map(|(s, (_, text))| (*s, text.clone()))
        .collect();
    let context = weave(units, items);

    let queries: Vec<String> = asked.iter().map(|i| keys[*i].clone()).collect();
    let answers: Vec<String> = asked.iter().flat_map(|i| values[*i].clone()).collect();
    let query = join_queries(&queries);
    let (instruction, question, answer_prefix) = if q * v == 1 {
        let s = n.needle_type.singular();
        (
            format!(
                "A special magic {s} is hidden within the following text. Make sure to \
                 memorize it. I will quiz you about the {s} afterwards."
            ),
            format!("What is the special magic {s} for {query} mentioned in the provided text?"),
            format!("The special magic {s} for {query} mentioned in the provided text is"),
        )
    } else {
        let s = n.needle_type.name();
        (
            format!(
                "Some special magic {s} are hidden within the following text. Make sure to \
                 memorize it. I will quiz you about the {s} afterwards."
            ),
            format!(
                "What are all the special magic {s} for {query} mentioned in the provided text?"
            ),
            format!("The special magic {s} for {query} mentioned in the provided text are"),
        )
    };
    Rendered {
        context,
        question,
        answers,
        instruction,
        answer_prefix,
        depth,
        queries,
        units,
    }
}

fn render_vt(p: &Params, rng: &mut ChaCha8Rng, units: usize) -> Rendered {
    let (chains, hops) = (p.vt.chains, p.vt.hops);
    let mut names: HashSet<String> = HashSet::new();
    let mut vars: Vec<Vec<String>> = Vec::with_capacity(chains);
    for _ in 0..chains {
        let mut chain = Vec::with_capacity(hops + 1);
        while chain.len() < hops + 1 {
            let name: String = (0..5)
                .map(|_| (b'A' + bounded(rng, 26) as u8) as char)
                .collect();
            if names.insert(name.clone()) {
                chain.push(name);
            }
        }
        vars.push(chain);
    }
    let values: Vec<u64> = sample_distinct(rng, 90_000, chains)
        .into_iter()
        .map(|v| 10_000 + v)
        .collect();
    // Sorted positions per chain keep every chain in assignment order.
    let mut positions: Vec<Vec<f64>> = Vec::with_capacity(chains);
    for _ in 0..chains {
        let mut u: Vec<f64> = (0..=hops).map(|_| unit_f64(rng)).collect();
        u.sort_by(f64::total_cmp);
        positions.push(u);
    }
    let mut items: Vec<(usize, usize, usize, String)> = Vec::new();
    for (c, chain) in vars.iter().enumerate() {
        for (h, name) in chain.iter().enumerate() {
            let text = if h == 0 {
                format!("VAR {name} = {}", values[c])
            } else {
                format!("VAR {name} = VAR {}", chain[h - 1])
            };
            items.push((slot(positions[c][h], units), c, h, text));
        }
    }
    items.sort_by_key(|(s, c, h, _)| (*s, *c, *h));
    let depth = Some(rel(slot(positions[0][0], units), units));
    let context = weave(
        units,
        items.into_iter().map(|(s, _, _, t)| (s, t)).collect(),
    );
    let value = values[0];
    Rendered {
        context,
        question: format!(
            "Find all variables that are assigned the value {value} in the text above."
        ),
        answers: vars[0].clone(),
        instruction:
            "Memorize and track the chain(s) of variable assignment hidden in the following text."
                .into(),
        answer_prefix: format!(
            "Answer: According to the chain(s) of variable assignment in the text above, {} \
             variables are assigned the value {value}, they are:",
            hops + 1
        ),
        depth,
        queries: Vec::new(),
        units,
    }
}

/// Size of the cwe vocabulary: the word list itself, or with `pairs` every ordered pair
/// `a-b` of two different words.
pub fn vocabulary_space(pairs: bool) -> u64 {
    let w = WORDS.len() as u64;
    if pairs { w * (w - 1) } else { w }
}

fn vocabulary_word(space: u64, i: u64) -> String {
    let w = WORDS.len() as u64;
    if space == w {
        WORDS[i as usize].to_string()
    } else {
        let a = i / (w - 1);
        let b = i % (w - 1);
        let b = if b >= a { b + 1 } else { b };
        format!("{}-{}", WORDS[a as usize], WORDS[b as usize])
    }
}

fn render_cwe(p: &Params, rng: &mut ChaCha8Rng, units: usize, pairs: bool) -> Rendered {
    let c = &p.cwe;
    let total = c.common + units;
    let space = vocabulary_space(pairs);
    let vocab: Vec<String> = sample_distinct(rng, space, total)
        .into_iter()
        .map(|i| vocabulary_word(space, i))
        .collect();
    let (common, uncommon) = vocab.split_at(c.common);
    let mut list: Vec<&str> =
        Vec::with_capacity(c.common * c.common_freq + units * c.uncommon_freq);
    for _ in 0..c.common_freq {
        list.extend(common.iter().map(String::as_str));
    }
    for _ in 0..c.uncommon_freq {
        list.extend(uncommon.iter().map(String::as_str));
    }
    shuffle(rng, &mut list);
    let context = list
        .iter()
        .enumerate()
        .map(|(i, w)| format!("{}. {w}", i + 1))
        .collect::<Vec<_>>()
        .join(" ");
    let n = c.common;
    Rendered {
        context,
        question: format!("What are the {n} most common words in the above list?"),
        answers: common.to_vec(),
        instruction: "Below is a numbered list of words. In these words, some appear more \
                      often than others. Memorize the ones that appear most often."
            .into(),
        answer_prefix: format!("Answer: The top {n} words that appear most often in the list are:"),
        depth: None,
        queries: Vec::new(),
        units,
    }
}

/// `k^-alpha` for `k >= 1`: repeated multiplication when `alpha` is a small integer (only
/// correctly rounded IEEE operations, so identical on every platform), else `powf`.
fn inv_pow(k: f64, alpha: f64) -> f64 {
    if alpha.fract() == 0.0 && (1.0..=64.0).contains(&alpha) {
        let mut p = 1.0;
        for _ in 0..alpha as u32 {
            p *= k;
        }
        1.0 / p
    } else {
        k.powf(-alpha)
    }
}

/// Riemann zeta `ζ(alpha)` for `alpha > 1`: the first 999 terms plus the Euler–Maclaurin
/// tail `K^(1-α)/(α-1) + K^-α/2 + α K^(-α-1)/12` at `K = 1000` (error below 1e-12).
pub fn zeta(alpha: f64) -> f64 {
    const K: f64 = 1000.0;
    let mut s = 0.0;
    for k in 1..1000 {
        s += inv_pow(k as f64, alpha);
    }
    let t = inv_pow(K, alpha);
    s + K * t / (alpha - 1.0) + t / 2.0 + alpha * t / (12.0 * K)
}

/// Zipf weights `w[r] = (r+1)^-alpha / ζ(alpha)` for ranks `r = 0..vocab`.
pub fn zipf_weights(alpha: f64, vocab: usize) -> Vec<f64> {
    let z = zeta(alpha);
    (1..=vocab).map(|k| inv_pow(k as f64, alpha) / z).collect()
}

fn render_fwe(p: &Params, rng: &mut ChaCha8Rng, units: usize) -> Rendered {
    let f = &p.fwe;
    let mut seen: HashSet<String> = HashSet::new();
    let mut vocab: Vec<String> = vec!["...".into()];
    while vocab.len() < f.vocab {
        let w: String = (0..f.word_len)
            .map(|_| (b'a' + bounded(rng, 26) as u8) as char)
            .collect();
        if seen.insert(w.clone()) {
            vocab.push(w);
        }
    }
    let weights = zipf_weights(f.alpha, f.vocab);
    let mut words: Vec<&str> = Vec::new();
    for (w, weight) in vocab.iter().zip(&weights) {
        let count = (units as f64 * weight) as usize;
        words.extend(std::iter::repeat_n(w.as_str(), count));
    }
    shuffle(rng, &mut words);
    Rendered {
        context: words.join(" "),
        question: "Do not provide any explanation. Please ignore the dots '....'. What are the \
                   three most frequently appeared words in the above coded text?"
            .into(),
        answers: vocab[1..4].to_vec(),
        instruction: "Read the following coded text and track the frequency of each coded \
                      word. Find the three most frequently appeared coded words."
            .into(),
        answer_prefix: "Answer: According to the coded text above, the three most frequently \
                        appeared words are:"
            .into(),
        depth: None,
        queries: Vec::new(),
        units,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeta_matches_closed_forms() {
        let pi = std::f64::consts::PI;
        assert!((zeta(2.0) - pi * pi / 6.0).abs() < 1e-12, "{}", zeta(2.0));
        assert!((zeta(4.0) - pi.powi(4) / 90.0).abs() < 1e-12);
        assert!((zeta(1.5) - 2.612_375_348_685_488).abs() < 1e-9);
    }

    #[test]
    fn fit_finds_largest_fitting_size() {
        for target in [0usize, 5, 100, 1234, 99_999] {
            let r: Result<_, ()> = fit(0, 1_000_000, target, |n| Ok(7 * n + 3));
            let expect = if target < 3 {
                None
            } else {
                Some(((target - 3) / 7, 0))
            };
            assert_eq!(r.unwrap().map(|x| x.0), expect.map(|x| x.0), "{target}");
        }
        // Capped: returns max even when still under the target.
        let r: Result<_, ()> = fit(2, 10, 1000, Ok);
        assert_eq!(r.unwrap(), Some((10, 10)));
        // Flat measure: terminates.
        let r: Result<_, ()> = fit(0, 1000, 10, |_| Ok(1));
        assert_eq!(r.unwrap(), Some((1000, 1)));
    }

    #[test]
    fn fit_uses_few_measurements() {
        let mut calls = 0;
        let r: Result<_, ()> = fit(0, 10_000_000, 128_000, |n| {
            calls += 1;
            Ok(22 * n + 5 + n % 3)
        });
        let (n, c) = r.unwrap().unwrap();
        assert!(c <= 128_000 && 22 * (n + 1) + 5 > 128_000 - 3, "{n} {c}");
        assert!(calls <= 20, "{calls} measurements");
    }

    #[test]
    fn join_queries_like_ruler() {
        let q = |v: &[&str]| join_queries(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(q(&["a"]), "a");
        assert_eq!(q(&["a", "b"]), "a, and b");
        assert_eq!(q(&["a", "b", "c"]), "a, b, and c");
    }

    #[test]
    fn uuid_has_v4_shape() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let u = uuid4(&mut rng);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!("89ab".contains(&u[19..20]), "{u}");
    }

    #[test]
    fn compound_vocabulary_is_distinct() {
        let space = vocabulary_space(true);
        let w = WORDS.len() as u64;
        assert_eq!(space, w * (w - 1));
        let all: HashSet<String> = (0..space).map(|i| vocabulary_word(space, i)).collect();
        assert_eq!(all.len() as u64, space);
    }
}
