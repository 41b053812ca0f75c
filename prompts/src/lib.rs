//! Every user-facing text of wenke, as `minijinja` templates, plus the
//! routing examples (`routes/*.txt`) and the sensitive-word list
//! (`safety/sensitive.txt`) that decide how a message is handled.
//!
//! The templates ship in the binary (from `prompts/templates/`) and can be
//! overridden file by file from a directory, so editors change wording
//! without a rebuild. A template that fails to parse in the override
//! directory is reported and the shipped one is kept: a typo in a text must
//! not take the bot down.

use std::path::Path;

use minijinja::Environment;
use serde::Serialize;

/// Expands to a `(name, shipped text)` pair for a file in `templates/`.
macro_rules! template {
    ($name:literal) => {
        ($name, include_str!(concat!("../templates/", $name)))
    };
}

/// Expands to a `(name, shipped text)` pair for a file in `routes/`.
macro_rules! route {
    ($name:literal) => {
        ($name, include_str!(concat!("../routes/", $name)))
    };
}

/// The shipped templates, by name.
const BUILTIN: &[(&str, &str)] = &[
    template!("abstain.j2"),
    template!("abstain_hint.j2"),
    template!("answer.j2"),
    template!("answer_hint.j2"),
    template!("answer_published.j2"),
    template!("button_expired.j2"),
    template!("capability_filed.j2"),
    template!("demand_claimed.j2"),
    template!("demand_filed.j2"),
    template!("demand_status.j2"),
    template!("demand_updated.j2"),
    template!("detail.j2"),
    template!("feedback.j2"),
    template!("greeting.j2"),
    template!("help.j2"),
    template!("human.j2"),
    template!("in_progress.j2"),
    template!("intake_ask.j2"),
    template!("intake_cancelled.j2"),
    template!("intake_paused.j2"),
    template!("intake_summary.j2"),
    template!("link.j2"),
    template!("location.j2"),
    template!("media_received.j2"),
    template!("no_choice.j2"),
    template!("no_detail.j2"),
    template!("notify_ack.j2"),
    template!("push_entry.j2"),
    template!("rate_limited.j2"),
    template!("refused.j2"),
    template!("related.j2"),
    template!("source.j2"),
    template!("subscribed.j2"),
    template!("suggest.j2"),
    template!("suggest_hint.j2"),
    template!("unavailable.j2"),
    template!("unknown_menu.j2"),
    template!("unsubscribed.j2"),
    template!("voice_unrecognised.j2"),
    template!("welcome.j2"),
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
    /// A routing-cue line is malformed.
    #[error("{origin}:{line}: {message}")]
    Cue {
        /// The file.
        origin: String,
        /// The line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// No shipped file of this name.
    #[error("no shipped prompt file {0}")]
    Missing(String),
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

/// Expands to a `(name, shipped text)` pair for a file in `console/`.
macro_rules! console_page {
    ($name:literal) => {
        ($name, include_str!(concat!("../console/", $name)))
    };
}

/// The editor console's pages, by name.
const BUILTIN_CONSOLE: &[(&str, &str)] = &[
    console_page!("base.html"),
    console_page!("entries.html"),
    console_page!("entry.html"),
    console_page!("capabilities.html"),
    console_page!("demand.html"),
    console_page!("demands.html"),
    console_page!("dictionary.html"),
    console_page!("edit.html"),
    console_page!("error.html"),
    console_page!("feedback.html"),
    console_page!("hit_test.html"),
    console_page!("import.html"),
    console_page!("login.html"),
    console_page!("push.html"),
    console_page!("jobs.html"),
    console_page!("reports.html"),
    console_page!("report.md"),
    console_page!("review.html"),
    console_page!("unanswered.html"),
];

/// The directory, under an override directory, of the console's pages.
pub const CONSOLE_DIR: &str = "console";

/// The editor console's page templates (HTML, auto-escaped), the shipped
/// ones each overridden by a parsing file of the same name in
/// `<dir>/console/`.
pub struct ConsolePages {
    env: Environment<'static>,
}

impl ConsolePages {
    /// The shipped pages, with the overrides found in `dir`, and the
    /// problems found there.
    pub fn load(dir: Option<&Path>) -> (Self, Vec<PromptError>) {
        let mut env = Environment::new();
        let mut problems = Vec::new();
        for (name, source) in BUILTIN_CONSOLE {
            let override_text = dir.and_then(|dir| {
                let path = dir.join(CONSOLE_DIR).join(name);
                match std::fs::read_to_string(&path) {
                    Ok(text) => Some(text),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(source) => {
                        problems.push(PromptError::Io {
                            path: path.display().to_string(),
                            source,
                        });
                        None
                    }
                }
            });
            if let Some(text) = override_text {
                let mut probe = Environment::new();
                match probe.add_template_owned(*name, text.clone()) {
                    Ok(()) => {
                        if env.add_template_owned(*name, text).is_ok() {
                            continue;
                        }
                    }
                    Err(source) => problems.push(PromptError::Template {
                        name: (*name).to_owned(),
                        source,
                    }),
                }
            }
            if let Err(source) = env.add_template_owned(*name, *source) {
                problems.push(PromptError::Template {
                    name: (*name).to_owned(),
                    source,
                });
            }
        }
        (Self { env }, problems)
    }

    /// Renders a page.
    pub fn render(&self, name: &str, context: impl Serialize) -> Result<String, PromptError> {
        let failed = |source| PromptError::Template {
            name: name.to_owned(),
            source,
        };
        self.env
            .get_template(name)
            .map_err(failed)?
            .render(minijinja::value::Serde(context))
            .map_err(failed)
    }
}

/// The shipped routing examples: `(file name, text)`; the file name
/// without `.txt` is the route's name.
const BUILTIN_ROUTES: &[(&str, &str)] = &[
    route!("capability_offer.txt"),
    route!("demand_status.txt"),
    route!("feedback.txt"),
    route!("greeting.txt"),
    route!("help.txt"),
    route!("human.txt"),
    route!("science_question.txt"),
    route!("tech_demand.txt"),
];

/// The shipped routing cues.
const BUILTIN_CUES: &str = include_str!("../routes/cues.tsv");
/// The file name of the routing cues in an override directory.
pub const CUES_FILE: &str = "cues.tsv";

/// The shipped sensitive-word list.
const BUILTIN_SENSITIVE: &str = include_str!("../safety/sensitive.txt");
/// The file name of the sensitive-word list in an override directory.
pub const SENSITIVE_FILE: &str = "sensitive.txt";

/// One labelled example utterance of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteExample {
    /// The route's name (`science_question`, `greeting`, …).
    pub route: String,
    /// What a user might write.
    pub text: String,
}

/// Parses a routing-example file: one utterance per line; blank lines and
/// lines starting with `#` are ignored.
fn parse_examples(route: &str, text: &str) -> Vec<RouteExample> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| RouteExample {
            route: route.to_owned(),
            text: line.to_owned(),
        })
        .collect()
}

/// The routing examples: the shipped ones, each file replaced by a file of
/// the same name in `dir` when it exists (pass `None` for the shipped set).
pub fn route_examples(dir: Option<&Path>) -> Result<Vec<RouteExample>, PromptError> {
    let mut examples = Vec::new();
    for (file, shipped) in BUILTIN_ROUTES {
        let route = file.trim_end_matches(".txt");
        let text = match dir.map(|d| d.join(file)) {
            Some(path) => match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (*shipped).to_owned(),
                Err(source) => {
                    return Err(PromptError::Io {
                        path: path.display().to_string(),
                        source,
                    });
                }
            },
            None => (*shipped).to_owned(),
        };
        examples.extend(parse_examples(route, &text));
    }
    Ok(examples)
}

/// A word pattern that adds to a route's score (`routes/cues.tsv`).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteCue {
    /// The route's name.
    pub route: String,
    /// What a match adds to the route's similarity score.
    pub bonus: f32,
    /// The regular expression, over normalised text.
    pub pattern: String,
    /// The line it came from, for error messages.
    pub line: usize,
}

/// The routing cues: the shipped file, or `dir/cues.tsv` when it exists.
/// Lines are `route<TAB>bonus<TAB>pattern`; `#` starts a comment line.
pub fn route_cues(dir: Option<&Path>) -> Result<Vec<RouteCue>, PromptError> {
    let (origin, text) = match dir.map(|d| d.join(CUES_FILE)) {
        Some(path) => match std::fs::read_to_string(&path) {
            Ok(text) => (path.display().to_string(), text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (CUES_FILE.to_owned(), BUILTIN_CUES.to_owned())
            }
            Err(source) => {
                return Err(PromptError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        },
        None => (CUES_FILE.to_owned(), BUILTIN_CUES.to_owned()),
    };
    let mut cues = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut fields = line.splitn(3, '\t');
        let (Some(route), Some(bonus), Some(pattern)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(PromptError::Cue {
                origin: origin.clone(),
                line: index + 1,
                message: "expected route<TAB>bonus<TAB>pattern".into(),
            });
        };
        let bonus: f32 = bonus.trim().parse().map_err(|_| PromptError::Cue {
            origin: origin.clone(),
            line: index + 1,
            message: format!("bonus {bonus:?} is not a number"),
        })?;
        cues.push(RouteCue {
            route: route.trim().to_owned(),
            bonus,
            pattern: pattern.trim().to_owned(),
            line: index + 1,
        });
    }
    Ok(cues)
}

/// The sensitive words: the shipped list, or `dir/sensitive.txt` when it
/// exists. One word per line; `#` starts a comment line.
pub fn sensitive_words(dir: Option<&Path>) -> Result<Vec<String>, PromptError> {
    let text = match dir.map(|d| d.join(SENSITIVE_FILE)) {
        Some(path) => match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BUILTIN_SENSITIVE.to_owned(),
            Err(source) => {
                return Err(PromptError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        },
        None => BUILTIN_SENSITIVE.to_owned(),
    };
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

const BUILTIN_INTAKE: &[(&str, &str)] = &[
    ("fields.tsv", include_str!("../intake/fields.tsv")),
    ("words.tsv", include_str!("../intake/words.tsv")),
];

/// The vocabulary of the filing conversation (`intake/fields.tsv`,
/// `intake/words.tsv`): the shipped file, or `dir/<name>` when it exists.
/// Lines are tab-separated with comma-separated word lists; `#` starts a
/// comment line. Returns the non-comment lines split at tabs.
pub fn intake_table(dir: Option<&Path>, name: &str) -> Result<Vec<Vec<String>>, PromptError> {
    let builtin = BUILTIN_INTAKE
        .iter()
        .find(|(file, _)| *file == name)
        .map(|(_, text)| *text)
        .ok_or_else(|| PromptError::Missing(format!("intake/{name}")))?;
    let text = match dir.map(|d| d.join(name)) {
        Some(path) => match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => builtin.to_owned(),
            Err(source) => {
                return Err(PromptError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        },
        None => builtin.to_owned(),
    };
    Ok(text
        .lines()
        .map(str::trim_end)
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(|line| line.split('\t').map(|f| f.trim().to_owned()).collect())
        .collect())
}

/// The names of every shipped template.
pub fn template_names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(name, _)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shipped_templates_render() {
        let prompts = Prompts::builtin();
        let source = prompts
            .render("source.j2", json!({"source": "某农科院", "reviewer": "乙"}))
            .expect("source");
        assert_eq!(source, "来源：某农科院 ｜ 审核：乙");
        let related = prompts
            .render("related.j2", json!({"related": ["问一", "问二"]}))
            .expect("related");
        assert!(related.contains("2. 问二"), "{related}");
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
        // Every shipped template renders with an empty context: a missing
        // variable must not take a reply down.
        for name in template_names() {
            prompts
                .render(name, json!({}))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn console_pages_parse_escape_and_can_be_overridden() {
        let (pages, problems) = ConsolePages::load(None);
        assert!(problems.is_empty(), "{problems:?}");
        let html = pages
            .render(
                "error.html",
                serde_json::json!({ "status": 404, "message": "<script>x</script>" }),
            )
            .expect("renders");
        assert!(html.contains("&lt;script&gt;"), "auto-escaped: {html}");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join(CONSOLE_DIR)).expect("dir");
        std::fs::write(
            dir.path().join(CONSOLE_DIR).join("error.html"),
            "错误：{{ message }}",
        )
        .expect("write");
        std::fs::write(dir.path().join(CONSOLE_DIR).join("login.html"), "{% if %}").expect("write");
        let (pages, problems) = ConsolePages::load(Some(dir.path()));
        assert_eq!(
            problems.len(),
            1,
            "the broken login page is reported: {problems:?}"
        );
        let html = pages
            .render("error.html", serde_json::json!({ "message": "无" }))
            .expect("renders");
        assert_eq!(html, "错误：无");
        assert!(
            pages
                .render("login.html", serde_json::json!({ "csrf": "t" }))
                .expect("the shipped login page stays")
                .contains("name=\"password\"")
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

    #[test]
    fn routing_examples_and_sensitive_words_ship_and_can_be_overridden() {
        let shipped = route_examples(None).expect("shipped");
        assert!(shipped.len() >= 200, "{}", shipped.len());
        assert!(
            shipped
                .iter()
                .any(|e| e.route == "greeting" && e.text == "你好")
        );
        assert!(shipped.iter().all(|e| !e.text.starts_with('#')));

        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("greeting.txt"), "# only one\n吃了没\n").expect("write");
        std::fs::write(dir.path().join(SENSITIVE_FILE), "# none\n违禁词\n").expect("write");
        let overridden = route_examples(Some(dir.path())).expect("overridden");
        let greetings: Vec<_> = overridden
            .iter()
            .filter(|e| e.route == "greeting")
            .collect();
        assert_eq!(greetings.len(), 1);
        assert_eq!(greetings[0].text, "吃了没");
        assert_eq!(
            sensitive_words(Some(dir.path())).expect("words"),
            vec!["违禁词".to_owned()]
        );
        assert!(sensitive_words(None).expect("shipped").len() >= 10);
        let cues = route_cues(None).expect("shipped cues");
        assert!(
            cues.iter()
                .any(|c| c.route == "tech_demand" && c.bonus > 0.0)
        );
        std::fs::write(dir.path().join(CUES_FILE), "greeting\tabc\t^hi$\n").expect("write");
        assert!(matches!(
            route_cues(Some(dir.path())),
            Err(PromptError::Cue { line: 1, .. })
        ));
    }
}
