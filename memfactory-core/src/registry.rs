//! The component registry: every component crate submits a [`Registration`] through
//! `inventory`, and recipes name components by `kind`.
//!
//! Naming rule: registry `kind` = crate suffix = facade feature suffix, with the family as
//! prefix (`kind = "overwrite"` in an op table ↔ crate `memfactory-op-overwrite` ↔ feature
//! `op-overwrite`). An unknown kind therefore names the feature that would enable it.
//!
//! inventory drops registrations of crates that nothing names: the `memfactory` facade
//! writes `use memfactory_op_x as _;` for each enabled feature.

use crate::{
    Cfg, DataSource, Embedder, Error, LanguageModel, MemoryOp, Paradigm, Result, Reward,
    StoreFactory,
};

/// The component families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// Memory operations (`memfactory-op-*`).
    Op,
    /// Memory stores (`memfactory-store-*`).
    Store,
    /// Language-model backends (`memfactory-lm-*`).
    Lm,
    /// Datasets (`memfactory-data-*`).
    Data,
    /// Rewards and metrics (`memfactory-reward-*`).
    Reward,
    /// Agent paradigms (`memfactory-agent-*`).
    Agent,
    /// Sentence embedders (`memfactory-embed-*`).
    Embed,
}

impl Family {
    /// Every family, in display order.
    pub const ALL: [Family; 7] = [
        Family::Agent,
        Family::Op,
        Family::Store,
        Family::Lm,
        Family::Embed,
        Family::Data,
        Family::Reward,
    ];

    /// Crate and feature prefix (`op`, `store`, `lm`, `data`, `reward`, `agent`, `embed`).
    pub fn prefix(self) -> &'static str {
        match self {
            Family::Op => "op",
            Family::Store => "store",
            Family::Lm => "lm",
            Family::Data => "data",
            Family::Reward => "reward",
            Family::Agent => "agent",
            Family::Embed => "embed",
        }
    }

    /// Human name of the family.
    pub fn name(self) -> &'static str {
        match self {
            Family::Op => "memory op",
            Family::Store => "store",
            Family::Lm => "LM backend",
            Family::Data => "dataset",
            Family::Reward => "reward",
            Family::Agent => "agent",
            Family::Embed => "embedder",
        }
    }

    /// The facade feature that links the component `kind` of this family.
    pub fn feature(self, kind: &str) -> String {
        format!("{}-{}", self.prefix(), kind)
    }
}

/// How a component crate makes itself available: submitted with `inventory::submit!`.
pub struct Registration<T: ?Sized + 'static> {
    /// Registry kind, e.g. `"overwrite"`.
    pub kind: &'static str,
    /// One-line description shown by `memfactory list`.
    pub about: &'static str,
    /// Builds the component from its table. Must read every key it accepts through the
    /// [`Cfg`] (unknown keys are rejected after it returns).
    pub build: fn(&mut Cfg) -> Result<Box<T>>,
}

/// Component trait objects that have a registry.
pub trait Component: 'static {
    /// Which family.
    const FAMILY: Family;
}

macro_rules! family {
    ($t:ty, $f:expr) => {
        impl Component for $t {
            const FAMILY: Family = $f;
        }
        inventory::collect!(Registration<$t>);
    };
}

family!(dyn MemoryOp, Family::Op);
family!(dyn StoreFactory, Family::Store);
family!(dyn LanguageModel, Family::Lm);
family!(dyn DataSource, Family::Data);
family!(dyn Reward, Family::Reward);
family!(dyn Paradigm, Family::Agent);
family!(dyn Embedder, Family::Embed);

/// Every registration of family `T`, sorted by kind; two crates claiming one kind is an
/// error.
pub fn registrations<T: ?Sized + Component>() -> Result<Vec<&'static Registration<T>>>
where
    Registration<T>: inventory::Collect,
{
    let mut regs: Vec<&'static Registration<T>> = inventory::iter::<Registration<T>>().collect();
    regs.sort_by_key(|r| r.kind);
    for w in regs.windows(2) {
        if w[0].kind == w[1].kind {
            return Err(Error::Registry(format!(
                "two {} components registered as `{}`",
                T::FAMILY.name(),
                w[0].kind
            )));
        }
    }
    Ok(regs)
}

/// Kinds registered in family `T`, sorted.
pub fn kinds<T: ?Sized + Component>() -> Result<Vec<&'static str>>
where
    Registration<T>: inventory::Collect,
{
    Ok(registrations::<T>()?.iter().map(|r| r.kind).collect())
}

/// `(kind, about)` of every registered component, by family.
pub fn catalog() -> Result<Vec<(Family, &'static str, &'static str)>> {
    fn add<T: ?Sized + Component>(out: &mut Vec<(Family, &'static str, &'static str)>) -> Result<()>
    where
        Registration<T>: inventory::Collect,
    {
        for r in registrations::<T>()? {
            out.push((T::FAMILY, r.kind, r.about));
        }
        Ok(())
    }
    let mut out = Vec::new();
    add::<dyn Paradigm>(&mut out)?;
    add::<dyn MemoryOp>(&mut out)?;
    add::<dyn StoreFactory>(&mut out)?;
    add::<dyn LanguageModel>(&mut out)?;
    add::<dyn Embedder>(&mut out)?;
    add::<dyn DataSource>(&mut out)?;
    add::<dyn Reward>(&mut out)?;
    Ok(out)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Builds the component named by `cfg`'s `kind` key; returns it with its resolved table
/// (kind included, defaults filled in). Unknown kinds and unknown keys are errors naming
/// the key path.
pub fn build<T: ?Sized + Component>(mut cfg: Cfg) -> Result<(Box<T>, toml::Table)>
where
    Registration<T>: inventory::Collect,
{
    let kind: String = cfg.req("kind")?;
    let regs = registrations::<T>()?;
    let Some(reg) = regs.iter().find(|r| r.kind == kind) else {
        let family = T::FAMILY;
        let available: Vec<&str> = regs.iter().map(|r| r.kind).collect();
        let close = available
            .iter()
            .map(|k| (edit_distance(k, &kind), *k))
            .filter(|(d, _)| *d <= 2)
            .min();
        let mut hint = String::new();
        if let Some((_, k)) = close {
            hint.push_str(&format!("Did you mean `{k}`? "));
        }
        hint.push_str(&format!(
            "If `{kind}` is a MemFactory component that this binary was built without, enable \
             Cargo feature `{}` of the `memfactory` crate (e.g. `cargo install memfactory-cli \
             --features memfactory/{}`).",
            family.feature(&kind),
            family.feature(&kind)
        ));
        return Err(Error::UnknownKind {
            key: cfg.key("kind"),
            family: family.name().to_string(),
            kind,
            available: if available.is_empty() {
                "(none linked)".into()
            } else {
                available.join(", ")
            },
            hint,
        });
    };
    let component = (reg.build)(&mut cfg)?;
    let mut resolved = cfg.finish()?;
    // Keep `kind` first for readability of the resolved recipe.
    let mut out = toml::Table::new();
    out.insert("kind".into(), toml::Value::String(kind));
    resolved.remove("kind");
    out.extend(resolved);
    Ok((component, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("sub-em", "sub-em"), 0);
        assert_eq!(edit_distance("subem", "sub-em"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn unknown_kind_names_key_and_feature() {
        let cfg = Cfg::new(
            "agent.update",
            toml::from_str("kind = \"teleport\"").unwrap(),
        );
        let err = build::<dyn MemoryOp>(cfg).err().unwrap().to_string();
        assert!(err.contains("`agent.update.kind`"), "{err}");
        assert!(err.contains("`op-teleport`"), "{err}");
    }
}
