//! Checks a request's answers against its policy's questions.

use std::collections::HashSet;

use crate::domain::assignment_policy::MAX_ANSWER;
use crate::domain::validate::Check;
use crate::error::Result;
use crate::pb::{Answer, AssignmentPolicy, question};

/// Every answer must answer a question of the policy, once, with a valid
/// value; with `require_all`, every required question must be answered.
pub fn check(policy: &AssignmentPolicy, answers: &[Answer], require_all: bool) -> Result<()> {
    let mut check = Check::new("assignment_request");
    let mut answered = HashSet::new();
    for (i, answer) in answers.iter().enumerate() {
        let field = format!("answers[{i}]");
        let Some(question) = policy.questions.iter().find(|q| q.id == answer.question_id) else {
            check.fail(
                &format!("{field}.question_id"),
                format!("the policy has no question {:?}", answer.question_id),
            );
            continue;
        };
        if !answered.insert(&answer.question_id) {
            check.fail(&format!("{field}.question_id"), "is answered twice");
        }
        let values = &answer.values;
        if values.is_empty() || values.iter().all(|v| v.trim().is_empty()) {
            check.fail(&format!("{field}.values"), "must not be empty");
            continue;
        }
        match &question.kind {
            Some(question::Kind::TextInput(text)) => {
                let max = if text.max_length > 0 {
                    text.max_length as usize
                } else {
                    MAX_ANSWER
                };
                if values.len() != 1 {
                    check.fail(
                        &format!("{field}.values"),
                        "a text question takes one value",
                    );
                } else {
                    check.text(&format!("{field}.values[0]"), &values[0], max, true);
                }
            }
            Some(question::Kind::Choice(choice)) => {
                if values.len() > 1 && !choice.multiple {
                    check.fail(&format!("{field}.values"), "the question takes one choice");
                }
                for (j, value) in values.iter().enumerate() {
                    if !choice.choices.contains(value) {
                        check.fail(
                            &format!("{field}.values[{j}]"),
                            format!("{value:?} is not one of {:?}", choice.choices),
                        );
                    }
                }
            }
            None => {}
        }
    }
    if require_all {
        for question in policy.questions.iter().filter(|q| q.required) {
            if !answered.contains(&question.id) {
                check.fail(
                    "answers",
                    format!("question {:?} requires an answer", question.id),
                );
            }
        }
    }
    check.finish()
}
