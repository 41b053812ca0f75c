//! The editorial state machine: transitions, four eyes, revisions and restore,
//! and invariants over random action sequences.

use kb::entry::{Category, Entry, EntryContent, EntryId, Source, Status};
use kb::workflow::{Action, Revision, WorkflowError, apply, create};
use proptest::prelude::*;
use time::OffsetDateTime;

fn content(question: &str) -> EntryContent {
    EntryContent {
        external_key: Some("agri-potato-late-blight".into()),
        question: question.into(),
        alt_questions: vec!["洋芋叶子发黑咋个办".into()],
        answer: "发现中心病株及时拔除，选用登记药剂交替喷施，注意安全间隔期。".into(),
        short_answer: None,
        category: Category::Farming,
        tags: vec!["病害".into()],
        crops: vec!["马铃薯".into()],
        regions: vec![],
        months: vec![5, 6],
        audience: Some("农户".into()),
        source: Source {
            organisation: "示例内容，未经专家审核".into(),
            document: None,
            url: None,
        },
        review_by: Some("2027-06-30".into()),
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::UNIX_EPOCH
}

/// A draft by 王编辑, submitted for review.
fn submitted() -> Entry {
    let (draft, _) = create(
        EntryId::new(),
        content("马铃薯晚疫病怎么防治？"),
        "王编辑",
        now(),
    )
    .unwrap();
    apply(&draft, Action::Submit, "王编辑", now(), &[])
        .unwrap()
        .0
}

#[test]
fn draft_to_published_needs_a_second_person() {
    let in_review = submitted();
    assert_eq!(in_review.status, Status::InReview);

    let own = apply(
        &in_review,
        Action::Approve { note: None },
        " 王编辑 ",
        now(),
        &[],
    );
    assert!(
        matches!(own, Err(WorkflowError::SelfReview { .. })),
        "{own:?}"
    );

    let (published, revision) = apply(
        &in_review,
        Action::Approve { note: None },
        "李审核",
        now(),
        &[],
    )
    .unwrap();
    assert_eq!(published.status, Status::Published);
    assert_eq!(published.reviewer.as_deref(), Some("李审核"));
    assert_eq!(published.version, 3);
    assert_eq!(revision.previous_status, Some(Status::InReview));
    assert_eq!(revision.snapshot, published);
}

#[test]
fn editing_published_content_takes_it_back_to_draft() {
    let review = submitted();
    let (published, _) = apply(
        &review,
        Action::Approve { note: None },
        "李审核",
        now(),
        &[],
    )
    .unwrap();
    let (edited, _) = apply(
        &published,
        Action::Edit {
            content: content("马铃薯晚疫病如何防治？"),
        },
        "李审核",
        now(),
        &[],
    )
    .unwrap();
    assert_eq!(edited.status, Status::Draft);
    assert_eq!(edited.reviewer, None);
    assert_eq!(
        edited.author, "李审核",
        "the editor of the new text is its author"
    );
}

#[test]
fn invalid_transitions_and_content_are_refused() {
    let (draft, _) = create(EntryId::new(), content("问题"), "王编辑", now()).unwrap();
    for action in [
        Action::Approve { note: None },
        Action::Reject {
            note: "不行".into(),
        },
        Action::Retire { note: None },
    ] {
        assert!(matches!(
            apply(&draft, action, "李审核", now(), &[]),
            Err(WorkflowError::InvalidTransition { .. })
        ));
    }
    let mut empty = content("问题");
    empty.answer = "  ".into();
    let Err(WorkflowError::Invalid(errors)) = create(EntryId::new(), empty, "王编辑", now())
    else {
        panic!("an empty answer must be refused");
    };
    assert_eq!(errors[0].field, "answer");
    assert!(matches!(
        create(EntryId::new(), content("问题"), "  ", now()),
        Err(WorkflowError::MissingActor)
    ));
}

#[test]
fn restore_brings_back_old_content_as_a_new_draft_revision() {
    let (v1, r1) = create(EntryId::new(), content("第一版问题"), "王编辑", now()).unwrap();
    let (v2, r2) = apply(
        &v1,
        Action::Edit {
            content: content("第二版问题"),
        },
        "王编辑",
        now(),
        &[],
    )
    .unwrap();
    let history = vec![r1, r2];
    let (v3, r3) = apply(
        &v2,
        Action::Restore { version: 1 },
        "李编辑",
        now(),
        &history,
    )
    .unwrap();
    assert_eq!(v3.content.question, "第一版问题");
    assert_eq!(v3.version, 3);
    assert_eq!(r3.action, "restore");
    assert!(matches!(
        apply(
            &v3,
            Action::Restore { version: 9 },
            "李编辑",
            now(),
            &history
        ),
        Err(WorkflowError::UnknownVersion(9))
    ));
}

fn any_action() -> impl Strategy<Value = (Action, bool)> {
    // (action, performed by the author?)
    prop_oneof![
        Just(Action::Submit),
        Just(Action::Approve { note: None }),
        Just(Action::Reject {
            note: "需修改".into()
        }),
        Just(Action::Retire { note: None }),
        Just(Action::Edit {
            content: content("修改后的问题")
        }),
        (1u32..4).prop_map(|version| Action::Restore { version }),
    ]
    .prop_flat_map(|action| (Just(action), any::<bool>()))
}

proptest! {
    /// Over any sequence of actions by the author or another person: every
    /// accepted change bumps the version by one and is recorded, and nothing is
    /// ever published without a reviewer other than its author.
    #[test]
    fn workflow_invariants_hold(actions in proptest::collection::vec(any_action(), 0..40)) {
        let (mut entry, first) = create(EntryId::new(), content("马铃薯晚疫病怎么防治？"), "作者", now()).unwrap();
        let mut history: Vec<Revision> = vec![first];
        for (action, by_author) in actions {
            let actor = if by_author { entry.author.clone() } else { "另一位".to_owned() };
            let Ok((next, revision)) = apply(&entry, action, &actor, now(), &history) else {
                continue;
            };
            prop_assert_eq!(next.version, entry.version + 1);
            prop_assert_eq!(&revision.snapshot, &next);
            if next.status == Status::Published {
                let reviewer = next.reviewer.clone().unwrap_or_default();
                prop_assert!(!reviewer.is_empty());
                prop_assert_ne!(reviewer.to_lowercase(), next.author.to_lowercase());
            }
            history.push(revision);
            entry = next;
        }
        prop_assert_eq!(history.len() as u32, entry.version);
    }
}
