//! Samples: one question, its context (a long text or a multi-session dialogue) and its
//! gold answers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One evaluation or training instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Stable identifier (seeds derive from it).
    pub id: String,
    /// The question or problem.
    pub question: String,
    /// Accepted gold answers (metrics take the max over them).
    pub answers: Vec<String>,
    /// Long text context (documents), empty when the sample is a dialogue.
    #[serde(default)]
    pub context: String,
    /// Multi-session dialogue context (LoCoMo-style), when the sample has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialogue: Option<Dialogue>,
    /// Question category (for per-category reports), when the dataset has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Free-form facts about the instance (e.g. `docs`, `source`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, serde_json::Value>,
}

impl Sample {
    /// A text-context sample.
    pub fn text(
        id: impl Into<String>,
        question: impl Into<String>,
        context: impl Into<String>,
        answers: Vec<String>,
    ) -> Self {
        Sample {
            id: id.into(),
            question: question.into(),
            answers,
            context: context.into(),
            dialogue: None,
            category: None,
            meta: BTreeMap::new(),
        }
    }
}

/// A conversation between speakers over several dated sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dialogue {
    /// Speaker names.
    pub speakers: Vec<String>,
    /// Sessions in order.
    pub sessions: Vec<Session>,
}

/// One dated session of a dialogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// 1-based index.
    pub index: usize,
    /// Date and time as written in the data.
    pub date: Option<String>,
    /// Turns in order.
    pub turns: Vec<Turn>,
}

/// One utterance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// Dialogue id (e.g. `D1:3`).
    pub id: String,
    /// Who speaks.
    pub speaker: String,
    /// What is said.
    pub text: String,
}
