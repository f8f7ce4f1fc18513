//! The registry holds exactly the components whose Cargo features are enabled: no more
//! (nothing linked behind the user's back), no fewer (inventory did not drop a crate).
//! CI runs this test with the default features and with a reduced feature set.

use memfactory::core::registry;

#[test]
fn registry_holds_exactly_the_enabled_components() {
    let mut got: Vec<_> = registry::catalog()
        .expect("no duplicate registrations")
        .into_iter()
        .map(|(f, k, _)| (f, k))
        .collect();
    let mut want = memfactory::enabled_components();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn every_component_has_a_description() {
    for (family, kind, about) in registry::catalog().unwrap() {
        assert!(
            about.len() > 10,
            "{} `{kind}` has no real description",
            family.name()
        );
    }
}

#[test]
fn every_catalogue_kind_is_the_feature_suffix_and_the_crate_suffix() {
    for c in memfactory::CATALOGUE {
        assert_eq!(c.feature, format!("{}-{}", c.family.prefix(), c.kind));
        assert_eq!(c.krate, format!("memfactory-{}", c.feature));
    }
}

/// `docs/cargo_features.md`, rendered from the manifest's catalogue (names, crates, profiles,
/// comments) and the registry (each component's description).
fn render_feature_table() -> String {
    let abouts = registry::catalog().unwrap();
    let about = |c: &memfactory::Component| {
        abouts
            .iter()
            .find(|(f, k, _)| *f == c.family && *k == c.kind)
            .map(|(_, _, a)| a.replace('|', "\\|"))
            .unwrap_or_else(|| panic!("`{}` is enabled but not registered", c.feature))
    };
    let code_list = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::from(
        "# Cargo features of the `memfactory` facade\n\n\
         <!-- Generated from memfactory/Cargo.toml (names, crates, profiles, comments) and each\n     \
         component's registered description by `cargo test -p memfactory --test registry`.\n     \
         Edit those, not this file. -->\n\n\
         Every component is its own crate, linked only when its feature is on (feature =\n\
         `<family>-<kind>` = the recipe's `kind`). Paradigm profiles turn on exactly what a paradigm\n\
         needs. `memfactory list` prints the components a build holds.\n\n\
         | feature | crate | what |\n|---|---|---|\n",
    );
    let profiles: Vec<_> = memfactory::FEATURES
        .iter()
        .filter(|f| {
            f.implies
                .iter()
                .all(|i| !i.contains(':') && !i.contains('/'))
        })
        .collect();
    for f in &profiles {
        out += &format!(
            "| **`{}`** (profile) | — | {}: {} |\n",
            f.name,
            f.about
                .trim_start_matches("Profile: ")
                .trim_end_matches('.'),
            code_list(f.implies)
        );
    }
    for c in memfactory::CATALOGUE {
        out += &format!("| `{}` | {} | {} |\n", c.feature, c.krate, about(c));
    }
    for f in memfactory::FEATURES {
        if profiles.iter().any(|p| p.name == f.name) {
            continue;
        }
        let crates: Vec<String> = f
            .implies
            .iter()
            .filter_map(|i| {
                i.strip_prefix("dep:")
                    .map(str::to_string)
                    .or_else(|| i.contains('/').then(|| i.replace('?', "")))
            })
            .collect();
        out += &format!(
            "| `{}` | {} | {} |\n",
            f.name,
            crates.join(", "),
            f.about.replace('|', "\\|")
        );
    }
    let defaults: Vec<&str> = memfactory::FEATURES
        .iter()
        .filter(|f| f.default)
        .map(|f| f.name)
        .chain(
            memfactory::CATALOGUE
                .iter()
                .filter(|c| c.default)
                .map(|c| c.feature),
        )
        .collect();
    out += &format!(
        "\nDefault: {}.\n\n\
         A minimal build with only what a recipe names:\n\n    \
         cargo build -p memfactory-cli --no-default-features --features \
         memfactory/agent-memagent,memfactory/op-overwrite,memfactory/store-memory,\
         memfactory/lm-burn,memfactory/data-memagent-json,memfactory/reward-sub-em\n",
        code_list(&defaults)
    );
    out
}

/// The feature table is generated, as rust-analyzer keeps its generated docs: when it is stale
/// this test rewrites it and fails, so the new file is reviewed and committed.
#[test]
fn feature_table_is_generated_from_the_manifest_and_the_registry() {
    if let Some(off) = memfactory::CATALOGUE.iter().find(|c| !c.enabled) {
        println!(
            "skipping: feature `{}` is off in this build; the table needs every component",
            off.feature
        );
        return;
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/cargo_features.md");
    let want = render_feature_table();
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have != want {
        std::fs::write(&path, &want).unwrap();
        panic!(
            "docs/cargo_features.md was stale and has been regenerated from memfactory/Cargo.toml \
             and the registry: review and commit it"
        );
    }
}
