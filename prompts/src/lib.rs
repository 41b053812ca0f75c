//! Every user-facing text of wenke, as `minijinja` templates.
//!
//! The templates ship in the binary (from `prompts/templates/`) and can be
//! overridden file by file from a directory, so editors change wording
//! without a rebuild. A template that fails to parse in the override
//! directory is reported and the shipped one is kept: a typo in a text must
//! not take the bot down.

use std::path::Path;

use minijinja::Environment;
use serde::Serialize;

/// The shipped templates, by name.
const BUILTIN: &[(&str, &str)] = &[
    ("answer.j2", include_str!("../templates/answer.j2")),
    ("suggest.j2", include_str!("../templates/suggest.j2")),
    ("abstain.j2", include_str!("../templates/abstain.j2")),
];

/// Errors from loading or rendering templates.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// A template failed to parse or render.
    #[error("template {name}: {source}")]
    Template {
        /// Template name.
        name: String,
        /// The cause.
        #[source]
        source: minijinja::Error,
    },
    /// The override directory could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The loaded templates.
pub struct Prompts {
    env: Environment<'static>,
}

impl Prompts {
    /// The shipped templates only.
    pub fn builtin() -> Self {
        let mut env = Environment::new();
        for (name, source) in BUILTIN {
            // The shipped templates are tested to parse; see the tests below.
            if let Err(error) = env.add_template_owned(*name, *source) {
                tracing::error!(%error, name, "shipped template does not parse");
            }
        }
        Self { env }
    }

    /// The shipped templates, each overridden by a file of the same name in
    /// `dir` when one exists and parses. Returns the problems found.
    pub fn load(dir: &Path) -> (Self, Vec<PromptError>) {
        let mut prompts = Self::builtin();
        let mut problems = Vec::new();
        for (name, _) in BUILTIN {
            let path = dir.join(name);
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    problems.push(PromptError::Io {
                        path: path.display().to_string(),
                        source,
                    });
                    continue;
                }
            };
            let mut probe = Environment::new();
            if let Err(source) = probe.add_template_owned(*name, text.clone()) {
                problems.push(PromptError::Template {
                    name: (*name).to_owned(),
                    source,
                });
                continue;
            }
            if let Err(source) = prompts.env.add_template_owned(*name, text) {
                problems.push(PromptError::Template {
                    name: (*name).to_owned(),
                    source,
                });
            }
        }
        (prompts, problems)
    }

    /// Renders a template with a context; trailing white space is trimmed.
    pub fn render(&self, name: &str, context: impl Serialize) -> Result<String, PromptError> {
        let template = self
            .env
            .get_template(name)
            .map_err(|source| PromptError::Template {
                name: name.to_owned(),
                source,
            })?;
        template
            .render(minijinja::value::Serde(context))
            .map(|text| text.trim().to_owned())
            .map_err(|source| PromptError::Template {
                name: name.to_owned(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shipped_templates_render() {
        let prompts = Prompts::builtin();
        let answer = prompts
            .render(
                "answer.j2",
                json!({"answer": "甲", "source": "某农科院", "reviewer": "乙", "related": ["问一", "问二"]}),
            )
            .expect("answer");
        assert!(answer.starts_with("甲"));
        assert!(answer.contains("来源：某农科院 ｜ 审核：乙"));
        assert!(answer.contains("2. 问二"));
        let suggest = prompts
            .render("suggest.j2", json!({"candidates": ["甲", "乙"]}))
            .expect("suggest");
        assert!(suggest.contains("1. 甲\n2. 乙"), "{suggest}");
        assert!(
            prompts
                .render("abstain.j2", json!({}))
                .expect("abstain")
                .contains("暂时没有经过专家审核的权威答案")
        );
    }

    #[test]
    fn an_override_replaces_one_template_and_a_broken_one_is_reported_not_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("abstain.j2"), "还没有答案。").expect("write");
        std::fs::write(dir.path().join("suggest.j2"), "{% for %}").expect("write");
        let (prompts, problems) = Prompts::load(dir.path());
        assert_eq!(
            prompts.render("abstain.j2", json!({})).expect("render"),
            "还没有答案。"
        );
        assert_eq!(problems.len(), 1);
        assert!(
            prompts
                .render("suggest.j2", json!({"candidates": ["甲"]}))
                .expect("shipped kept")
                .contains("你是想问")
        );
    }
}
