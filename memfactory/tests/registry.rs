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
