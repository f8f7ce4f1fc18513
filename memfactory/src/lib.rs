//! # memfactory
//!
//! The facade of MemFactory: one Cargo feature per component, profile features per
//! paradigm, and the recipe runner.
//!
//! Components register themselves through `inventory`, but inventory only sees crates that
//! are linked, so this crate names each enabled component crate (`use … as _;`). The
//! registry therefore holds exactly the components whose features are enabled — a test
//! checks it.
//!
//! ## Features
//!
//! | feature | component |
//! |---|---|
//! | `memagent` (profile) | everything MemAgent needs: `agent-memagent`, `agent-long-context`, `op-overwrite`, `store-memory`, `data-ruler-hqa`, `data-memagent-json`, `reward-exact-match`, `reward-sub-em`, `reward-sub-em-memagent`, `reward-f1`, `reward-format` |
//! | `memory-r1` (profile) | Memory-R1: `agent-memory-r1`, `op-extract`, `op-update`, `op-retrieve`, `op-distill`, `store-memory`, `data-locomo`, `data-convgen`, `reward-exact-match`, `reward-f1`, `reward-bleu1`, `reward-format`, `reward-f1-mem0`, `reward-bleu1-nltk` |
//! | `rmm` (profile) | RMM: `agent-rmm`, `op-summarize`, `op-rerank`, `store-memory`, `embed-minilm`, `data-locomo`, `data-convgen`, `reward-exact-match`, `reward-f1`, `reward-bleu1`, `reward-format`, `reward-f1-mem0`, `reward-bleu1-nltk`, `reward-recall-at-k` |
//! | `agent-memagent` | MemAgent paradigm |
//! | `agent-long-context` | long-context baseline: the whole context in one prompt, one answer call (single-turn GRPO) |
//! | `agent-memory-r1` | Memory-R1 paradigm (memory manager + answer agent with distillation) |
//! | `agent-rmm` | RMM paradigm (prospective + retrospective reflection) |
//! | `op-extract` | fact extraction from dialogue turns |
//! | `op-update` | Memory-R1's manager: ADD / UPDATE / DELETE / NOOP |
//! | `op-retrieve` | BM25 / dense / hybrid top-k retrieval, per speaker |
//! | `op-distill` | Memory-R1's answer agent: memory distillation, then answer |
//! | `op-summarize` | RMM prospective reflection: topic memories added or merged |
//! | `op-rerank` | RMM retrospective reflection: learned (online REINFORCE) or LLM listwise reranking |
//! | `embed-minilm` | all-MiniLM-L6-v2 sentence embedder on burn |
//! | `op-overwrite` | MemAgent memory overwrite op |
//! | `store-memory` | in-memory store |
//! | `store-sqlite` | persistent banks in one SQLite file |
//! | `store-pgvector` | banks in PostgreSQL with pgvector, shared across processes |
//! | `lm-scripted` | deterministic scripted LM (tests) |
//! | `lm-burn` | native engine on burn (CPU `flex`) |
//! | `lm-openai` | any OpenAI-compatible server (vLLM, SGLang, llama-server): retries, bounded concurrency, token ids and log-probs when returned |
//! | `wgpu`, `cuda` | GPU backends of the native engine (`cuda` needs network at build time) |
//! | `data-ruler-hqa` | RULER-HotpotQA built from HotpotQA JSON |
//! | `data-memagent-json` | MemAgent / MemFactory eval files |
//! | `data-ruler` | RULER synthetic tasks (needles, variable tracking, word extraction) |
//! | `data-locomo` | LoCoMo conversations and categorised QA |
//! | `data-babi` | bAbI tasks, plain or scattered through a token-sized haystack (BABILong style) |
//! | `data-convgen` | generated multi-session dialogues with fact updates, five question types and gold memory operations |
//! | `reward-exact-match`, `reward-sub-em`, `reward-f1`, `reward-bleu1`, `reward-format` | answer metrics / rewards |
//! | `reward-overlong` | DAPO's soft overlong penalty |
//! | `reward-sub-em-memagent` | MemAgent's sub-EM (substring either way, first gold) |
//! | `reward-string-match-all`, `reward-string-match-part`, `reward-ruler-string-match` | RULER's scoring (the last: by each sample's `meta.metric`) |
//! | `reward-f1-mem0`, `reward-bleu1-nltk` | Mem0 / A-Mem LoCoMo F1 (token sets) and BLEU-1 (NLTK tokens) |
//! | `reward-recall-at-k` | Recall@K of retrieved memories' turns against evidence turn ids (LongMemEval / RMM) |
//! | `reward-judge` | LLM judge (True / False) through any LM backend, cached per (judge, question, gold, prediction) |
//! | `train` | the GRPO trainer (`memfactory train`) |
//!
//! Default: `memagent`, `memory-r1`, `rmm`, `data-ruler`, `data-locomo`, `data-convgen`, `data-babi`,
//! `reward-bleu1`, `reward-judge`, `reward-string-match-all`, `reward-string-match-part`, `reward-ruler-string-match`, `store-sqlite`, `store-pgvector`, `lm-scripted`, `lm-burn`, `lm-openai`, `train`.
//!
//! ## Running a recipe
//!
//! [`Assembly::from_recipe`] builds every component a recipe names (checking every key);
//! [`eval::run_eval`] runs the agent over the eval data and writes the run directory.

pub mod assembly;
pub mod batching;
pub mod compare;
pub mod eval;
pub mod plot;
pub mod sweep;
#[cfg(feature = "train")]
pub mod train;

pub use assembly::{Assembly, RunSettings};
pub use memfactory_core as core;

#[cfg(feature = "agent-long-context")]
use memfactory_agent_long_context as _;
#[cfg(feature = "agent-memagent")]
use memfactory_agent_memagent as _;
#[cfg(feature = "agent-memory-r1")]
use memfactory_agent_memory_r1 as _;
#[cfg(feature = "agent-rmm")]
use memfactory_agent_rmm as _;
#[cfg(feature = "data-babi")]
use memfactory_data_babi as _;
#[cfg(feature = "data-convgen")]
use memfactory_data_convgen as _;
#[cfg(feature = "data-locomo")]
use memfactory_data_locomo as _;
#[cfg(feature = "data-memagent-json")]
use memfactory_data_memagent_json as _;
#[cfg(feature = "data-ruler")]
use memfactory_data_ruler as _;
#[cfg(feature = "data-ruler-hqa")]
use memfactory_data_ruler_hqa as _;
#[cfg(feature = "embed-minilm")]
use memfactory_embed_minilm as _;
#[cfg(feature = "lm-burn")]
pub use memfactory_lm_burn as lm_burn;
#[cfg(feature = "op-distill")]
use memfactory_op_distill as _;
#[cfg(feature = "op-extract")]
use memfactory_op_extract as _;
#[cfg(feature = "op-rerank")]
use memfactory_op_rerank as _;
#[cfg(feature = "op-retrieve")]
use memfactory_op_retrieve as _;
#[cfg(feature = "op-summarize")]
use memfactory_op_summarize as _;
#[cfg(feature = "op-update")]
use memfactory_op_update as _;

/// Tunes a mimalloc global allocator for the burn engine (freed memory is reused, never
/// purged; see `memfactory_lm_burn::tune_allocator`). Does nothing without feature `lm-burn`.
pub fn tune_allocator() {
    #[cfg(feature = "lm-burn")]
    memfactory_lm_burn::tune_allocator();
}
#[cfg(feature = "lm-openai")]
use memfactory_lm_openai as _;
#[cfg(feature = "lm-scripted")]
use memfactory_lm_scripted as _;
#[cfg(feature = "op-overwrite")]
use memfactory_op_overwrite as _;
#[cfg(feature = "reward-bleu1")]
use memfactory_reward_bleu1 as _;
#[cfg(feature = "reward-bleu1-nltk")]
use memfactory_reward_bleu1_nltk as _;
#[cfg(feature = "reward-exact-match")]
use memfactory_reward_exact_match as _;
#[cfg(feature = "reward-f1")]
use memfactory_reward_f1 as _;
#[cfg(feature = "reward-f1-mem0")]
use memfactory_reward_f1_mem0 as _;
#[cfg(feature = "reward-format")]
use memfactory_reward_format as _;
#[cfg(feature = "reward-judge")]
use memfactory_reward_judge as _;
#[cfg(feature = "reward-overlong")]
use memfactory_reward_overlong as _;
#[cfg(feature = "reward-recall-at-k")]
use memfactory_reward_recall_at_k as _;
#[cfg(feature = "reward-ruler-string-match")]
use memfactory_reward_ruler_string_match as _;
#[cfg(feature = "reward-string-match-all")]
use memfactory_reward_string_match_all as _;
#[cfg(feature = "reward-string-match-part")]
use memfactory_reward_string_match_part as _;
#[cfg(feature = "reward-sub-em")]
use memfactory_reward_sub_em as _;
#[cfg(feature = "reward-sub-em-memagent")]
use memfactory_reward_sub_em_memagent as _;
#[cfg(feature = "store-memory")]
use memfactory_store_memory as _;
#[cfg(feature = "store-pgvector")]
use memfactory_store_pgvector as _;
#[cfg(feature = "store-sqlite")]
use memfactory_store_sqlite as _;

use memfactory_core::Family;

/// The components whose features are enabled in this build, as `(family, kind)`.
pub fn enabled_components() -> Vec<(Family, &'static str)> {
    let all: [(bool, Family, &'static str); 38] = [
        (cfg!(feature = "agent-memagent"), Family::Agent, "memagent"),
        (
            cfg!(feature = "agent-long-context"),
            Family::Agent,
            "long-context",
        ),
        (
            cfg!(feature = "agent-memory-r1"),
            Family::Agent,
            "memory-r1",
        ),
        (cfg!(feature = "agent-rmm"), Family::Agent, "rmm"),
        (cfg!(feature = "op-overwrite"), Family::Op, "overwrite"),
        (cfg!(feature = "op-extract"), Family::Op, "extract"),
        (cfg!(feature = "op-update"), Family::Op, "update"),
        (cfg!(feature = "op-retrieve"), Family::Op, "retrieve"),
        (cfg!(feature = "op-distill"), Family::Op, "distill"),
        (cfg!(feature = "op-summarize"), Family::Op, "summarize"),
        (cfg!(feature = "op-rerank"), Family::Op, "rerank"),
        (cfg!(feature = "embed-minilm"), Family::Embed, "minilm"),
        (cfg!(feature = "store-memory"), Family::Store, "memory"),
        (cfg!(feature = "store-sqlite"), Family::Store, "sqlite"),
        (cfg!(feature = "store-pgvector"), Family::Store, "pgvector"),
        (cfg!(feature = "lm-scripted"), Family::Lm, "scripted"),
        (cfg!(feature = "lm-burn"), Family::Lm, "burn"),
        (cfg!(feature = "lm-openai"), Family::Lm, "openai"),
        (cfg!(feature = "data-ruler-hqa"), Family::Data, "ruler-hqa"),
        (
            cfg!(feature = "data-memagent-json"),
            Family::Data,
            "memagent-json",
        ),
        (cfg!(feature = "data-ruler"), Family::Data, "ruler"),
        (cfg!(feature = "data-locomo"), Family::Data, "locomo"),
        (cfg!(feature = "data-convgen"), Family::Data, "convgen"),
        (cfg!(feature = "data-babi"), Family::Data, "babi"),
        (
            cfg!(feature = "reward-exact-match"),
            Family::Reward,
            "exact-match",
        ),
        (cfg!(feature = "reward-sub-em"), Family::Reward, "sub-em"),
        (cfg!(feature = "reward-f1"), Family::Reward, "f1"),
        (cfg!(feature = "reward-bleu1"), Family::Reward, "bleu1"),
        (cfg!(feature = "reward-judge"), Family::Reward, "judge"),
        (
            cfg!(feature = "reward-sub-em-memagent"),
            Family::Reward,
            "sub-em-memagent",
        ),
        (
            cfg!(feature = "reward-string-match-all"),
            Family::Reward,
            "string-match-all",
        ),
        (
            cfg!(feature = "reward-string-match-part"),
            Family::Reward,
            "string-match-part",
        ),
        (
            cfg!(feature = "reward-ruler-string-match"),
            Family::Reward,
            "ruler-string-match",
        ),
        (cfg!(feature = "reward-f1-mem0"), Family::Reward, "f1-mem0"),
        (
            cfg!(feature = "reward-bleu1-nltk"),
            Family::Reward,
            "bleu1-nltk",
        ),
        (
            cfg!(feature = "reward-recall-at-k"),
            Family::Reward,
            "recall-at-k",
        ),
        (cfg!(feature = "reward-format"), Family::Reward, "format"),
        (
            cfg!(feature = "reward-overlong"),
            Family::Reward,
            "overlong",
        ),
    ];
    all.iter()
        .filter(|(on, _, _)| *on)
        .map(|(_, f, k)| (*f, *k))
        .collect()
}
