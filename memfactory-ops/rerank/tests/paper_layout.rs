//! The memory layout of RMM's answer prompt (arXiv 2503.08026 App. D.2).

use memfactory_core::MemoryItem;
use memfactory_op_rerank::render_memory_list_rmm_paper;

#[test]
fn memories_are_listed_as_the_paper_with_turn_bullets() {
    let mut a = MemoryItem::new("r1", "Caroline went to a support group.");
    a.speaker = Some("Caroline".into());
    a.meta.insert(
        "dialogue".into(),
        "[D1:3] Caroline (8 May, 2023): I went to a group.\n\
         [D1:4] Melanie (8 May, 2023): How was it?\n\
         [D1:5] Caroline (8 May, 2023): Great!\n\
         [D1:9] Caroline (8 May, 2023): Also this."
            .into(),
    );
    let b = MemoryItem::new("r2", "Melanie paints.");
    let want = "  - Memory [0]: Caroline went to a support group.\n\
                \x20   * Caroline (8 May, 2023): I went to a group.\n\
                \x20     Melanie (8 May, 2023): How was it?\n\
                \x20   * Caroline (8 May, 2023): Great!\n\
                \x20   * Caroline (8 May, 2023): Also this.\n\
                \x20 - Memory [1]: Melanie paints.";
    assert_eq!(
        render_memory_list_rmm_paper(&[a.clone(), b.clone()], 0),
        want
    );
    // Bounded like the default layout: utterances of 42 and 34 characters, then budget 90
    // leaves 14 characters of the third; the fourth is counted.
    let got = render_memory_list_rmm_paper(std::slice::from_ref(&a), 90);
    assert_eq!(
        got,
        "  - Memory [0]: Caroline went to a support group.\n\
         \x20   * Caroline (8 May, 2023): I went to a group.\n\
         \x20     Melanie (8 May, 2023): How was it?\n\
         \x20   * Caroline (8 Ma…\n\
         \x20   (+1 more turn)"
    );
    // A turn line without an id or date still renders.
    let mut c = MemoryItem::new("r3", "x");
    c.meta.insert("dialogue".into(), "Mel: hi\nJo: yo".into());
    assert_eq!(
        render_memory_list_rmm_paper(&[c], 0),
        "  - Memory [0]: x\n    * Mel: hi\n      Jo: yo"
    );
}
