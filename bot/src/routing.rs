//! Deciding what a message wants, without an LLM.
//!
//! Two signals:
//! 1. **Rules** for what is unambiguous in the text itself: a bare number
//!    picks a suggested question, a demand number (XQ-2026-000123) asks for
//!    a demand's status, "转人工" asks for a person.
//! 2. **Semantic nearest neighbours** over the labelled examples in
//!    `prompts/routes/*.txt`: the message's embedding is compared with every
//!    example's, and each route scores the mean of its best three
//!    similarities.
//! 3. **Cues** (`prompts/routes/cues.tsv`): intent words ("想找专家攻关",
//!    "可以提供技术服务") add a bonus to their route's score, because nearest
//!    examples read a message's topic better than its intent. A message
//!    that names a crop, pest or other KB subject adds a small bonus to
//!    science questions.
//!
//! The best route wins; its confidence grows with its lead over the
//! runner-up.
//!
//! The router is pure over its inputs (the message's vector and text); the
//! engine embeds the message once and shares the vector with retrieval.

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

/// What a message wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// A science question for the knowledge base (also elliptical follow-ups).
    ScienceQuestion,
    /// A technical problem an organisation wants experts for (科技需求).
    TechDemand,
    /// An expert offering capabilities (科技所能).
    CapabilityOffer,
    /// Small talk: hello, thanks, goodbye.
    Greeting,
    /// What can the bot do.
    Help,
    /// A judgement of the previous answer.
    Feedback,
    /// A request for a person.
    Human,
    /// The status of a filed demand.
    DemandStatus,
    /// The choice of a suggested question by its number.
    Choice,
}

impl Route {
    /// Every route.
    pub const ALL: [Route; 9] = [
        Route::ScienceQuestion,
        Route::TechDemand,
        Route::CapabilityOffer,
        Route::Greeting,
        Route::Help,
        Route::Feedback,
        Route::Human,
        Route::DemandStatus,
        Route::Choice,
    ];

    /// The route's name, as in `prompts/routes/<name>.txt` and dev sets.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScienceQuestion => "science_question",
            Self::TechDemand => "tech_demand",
            Self::CapabilityOffer => "capability_offer",
            Self::Greeting => "greeting",
            Self::Help => "help",
            Self::Feedback => "feedback",
            Self::Human => "human",
            Self::DemandStatus => "demand_status",
            Self::Choice => "choice",
        }
    }

    /// The route with this name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|route| route.as_str() == name)
    }
}

/// How a route was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteSource {
    /// A rule on the text.
    Rule,
    /// Nearest labelled examples.
    Semantic,
}

/// The router's decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteDecision {
    /// Every route's final score, best first (empty for rule decisions).
    pub scores: Vec<(Route, f32)>,
    /// Where the message goes.
    pub route: Route,
    /// How sure the router is, in [0, 1].
    pub confidence: f32,
    /// Which signal decided.
    pub source: RouteSource,
    /// For [`Route::Choice`], the 1-based number chosen.
    pub choice: Option<usize>,
    /// For [`Route::DemandStatus`], the demand number named, normalised
    /// to `XQ-YYYY-NNNNNN`.
    pub demand_number: Option<String>,
}

impl RouteDecision {
    fn rule(route: Route) -> Self {
        Self {
            scores: Vec::new(),
            route,
            confidence: 1.0,
            source: RouteSource::Rule,
            choice: None,
            demand_number: None,
        }
    }
}

/// One labelled example with its vector.
struct Example {
    route: Route,
    vector: Vec<f32>,
}

/// Errors building a router.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// An example file names a route that does not exist.
    #[error("unknown route {0:?} in the routing examples")]
    UnknownRoute(String),
    /// A cue's pattern does not compile.
    #[error("routing cue on line {line}: {message}")]
    Cue {
        /// The cue file's line.
        line: usize,
        /// The regex error.
        message: String,
    },
    /// Example vectors of different lengths.
    #[error("example vectors must all have {expected} dimensions, one has {found}")]
    Dimension {
        /// The first vector's length.
        expected: usize,
        /// The odd one's.
        found: usize,
    },
}

/// Each route's score is the mean of its best this-many example similarities:
/// one stray example cannot capture a message, and a route with few examples
/// is not penalised.
const TOP_K: usize = 3;

/// One compiled cue.
struct Cue {
    route: Route,
    bonus: f32,
    pattern: Regex,
}

/// What a message names, as the engine sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signals {
    /// The message names a crop, pest or other subject of the KB.
    pub names_subject: bool,
}

/// Added to science questions when the message names a KB subject.
const SUBJECT_BONUS: f32 = 0.02;

/// The semantic router.
pub struct Router {
    examples: Vec<Example>,
    cues: Vec<Cue>,
}

static DEMAND_NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    // XQ-2026-000123, XQ2026000123, xq-2026-123: the year and a serial.
    Regex::new(r"(?i)XQ[-_ ]?(\d{4})[-_ ]?(\d{1,6})").expect("valid regex")
});

static CHOICE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:就|我)?(?:选|要|看)?(?:第)?\s*([1-9]|[一二三四五六七八九]|[①②③④⑤⑥⑦⑧⑨])\s*(?:个|条|号|项)?(?:问题)?(?:那个|那条)?(?:吧|呢|的|嘛|哈)?$",
    )
        .expect("valid regex")
});

/// Phrases that always ask for a person.
const HUMAN_PHRASES: &[&str] = &["转人工", "人工客服", "人工服务", "找真人", "真人客服"];

fn chinese_digit(c: char) -> Option<usize> {
    ["一二三四五六七八九", "①②③④⑤⑥⑦⑧⑨"]
        .iter()
        .find_map(|digits| digits.chars().position(|d| d == c))
        .map(|i| i + 1)
}

/// The 1-based number a message picks ("2", "第二个", "选3"), if that is all it says.
pub fn parse_choice(normalised: &str) -> Option<usize> {
    let text: String = normalised
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '.' | '。' | '、' | '!' | '！'))
        .collect();
    let captures = CHOICE.captures(&text)?;
    let digit = captures.get(1)?.as_str().chars().next()?;
    digit
        .to_digit(10)
        .map(|d| d as usize)
        .or_else(|| chinese_digit(digit))
}

/// The demand number a message names, as `XQ-YYYY-NNNNNN`.
pub fn parse_demand_number(normalised: &str) -> Option<String> {
    let captures = DEMAND_NUMBER.captures(normalised)?;
    let year = captures.get(1)?.as_str();
    let serial: u32 = captures.get(2)?.as_str().parse().ok()?;
    Some(format!("XQ-{year}-{serial:06}"))
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl Router {
    /// A router over labelled example vectors (L2-normalised, as the
    /// embedder returns them); routes are named as in [`Route::as_str`].
    pub fn new(
        examples: Vec<(String, Vec<f32>)>,
        cues: Vec<prompts::RouteCue>,
    ) -> Result<Self, RouterError> {
        let mut built = Vec::with_capacity(examples.len());
        let dimension = examples.first().map(|(_, v)| v.len());
        for (name, vector) in examples {
            let route =
                Route::parse(&name).ok_or_else(|| RouterError::UnknownRoute(name.clone()))?;
            if let Some(expected) = dimension
                && vector.len() != expected
            {
                return Err(RouterError::Dimension {
                    expected,
                    found: vector.len(),
                });
            }
            built.push(Example { route, vector });
        }
        let cues = cues
            .into_iter()
            .map(|cue| {
                let route = Route::parse(&cue.route)
                    .ok_or_else(|| RouterError::UnknownRoute(cue.route.clone()))?;
                let pattern = Regex::new(&cue.pattern).map_err(|e| RouterError::Cue {
                    line: cue.line,
                    message: e.to_string(),
                })?;
                Ok(Cue {
                    route,
                    bonus: cue.bonus,
                    pattern,
                })
            })
            .collect::<Result<Vec<_>, RouterError>>()?;
        Ok(Self {
            examples: built,
            cues,
        })
    }

    /// How many examples the router holds.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Whether the router holds no examples.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// The rules alone: `Some` when the text settles the route by itself.
    pub fn by_rule(normalised: &str) -> Option<RouteDecision> {
        if let Some(number) = parse_choice(normalised) {
            return Some(RouteDecision {
                choice: Some(number),
                ..RouteDecision::rule(Route::Choice)
            });
        }
        if let Some(number) = parse_demand_number(normalised) {
            return Some(RouteDecision {
                demand_number: Some(number),
                ..RouteDecision::rule(Route::DemandStatus)
            });
        }
        if HUMAN_PHRASES.iter().any(|p| normalised.contains(p)) {
            return Some(RouteDecision::rule(Route::Human));
        }
        None
    }

    /// Routes a message from its normalised text, its query embedding and
    /// what the engine found it to name.
    pub fn route(&self, normalised: &str, vector: &[f32], signals: Signals) -> RouteDecision {
        if let Some(decision) = Self::by_rule(normalised) {
            return decision;
        }
        let mut by_route: Vec<(Route, Vec<f32>)> =
            Route::ALL.iter().map(|r| (*r, Vec::new())).collect();
        for example in &self.examples {
            let similarity = dot(&example.vector, vector);
            if let Some((_, scores)) = by_route.iter_mut().find(|(r, _)| *r == example.route) {
                scores.push(similarity);
            }
        }
        let mut scored: Vec<(Route, f32)> = by_route
            .into_iter()
            .filter(|(_, scores)| !scores.is_empty())
            .map(|(route, mut scores)| {
                scores.sort_by(|a, b| b.total_cmp(a));
                let top = &scores[..scores.len().min(TOP_K)];
                let similarity = top.iter().sum::<f32>() / top.len() as f32;
                (route, similarity + self.bonus(route, normalised, signals))
            })
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        let Some(&(best, best_score)) = scored.first() else {
            // No examples at all: everything is a question for the KB.
            return RouteDecision {
                confidence: 0.0,
                scores: Vec::new(),
                source: RouteSource::Semantic,
                ..RouteDecision::rule(Route::ScienceQuestion)
            };
        };
        let runner_up = scored.get(1).map_or(0.0, |s| s.1);
        // e5 similarities live in a narrow band (~0.75–0.95); a lead of
        // 0.05 is already decisive, so the lead is scaled into [0, 1].
        let confidence = ((best_score - runner_up) * 10.0).clamp(0.0, 1.0);
        RouteDecision {
            route: best,
            confidence,
            source: RouteSource::Semantic,
            choice: None,
            demand_number: None,
            scores: scored,
        }
    }

    /// The largest cue bonus of `route` that the text earns.
    fn bonus(&self, route: Route, normalised: &str, signals: Signals) -> f32 {
        let cue = self
            .cues
            .iter()
            .filter(|cue| cue.route == route && cue.pattern.is_match(normalised))
            .map(|cue| cue.bonus)
            .fold(0.0f32, f32::max);
        let subject = if route == Route::ScienceQuestion && signals.names_subject {
            SUBJECT_BONUS
        } else {
            0.0
        };
        cue + subject
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_settle_numbers_demand_numbers_and_requests_for_a_person() {
        let cases: &[(&str, Option<Route>)] = &[
            ("1", Some(Route::Choice)),
            ("第二个", Some(Route::Choice)),
            ("选3", Some(Route::Choice)),
            ("3。", Some(Route::Choice)),
            ("就第二个吧", Some(Route::Choice)),
            ("②", Some(Route::Choice)),
            ("1号那个", Some(Route::Choice)),
            ("查询需求 XQ-2026-000123", Some(Route::DemandStatus)),
            ("需求 XQ2026000123 查询", Some(Route::DemandStatus)),
            ("给我转人工", Some(Route::Human)),
            ("10亩地施多少肥", None),
            ("洋芋叶子发黑咋个办", None),
            ("2号地块的水稻", None),
        ];
        for (text, expected) in cases {
            assert_eq!(Router::by_rule(text).map(|d| d.route), *expected, "{text}");
        }
        assert_eq!(parse_choice("第二个"), Some(2));
        assert_eq!(parse_choice("选3"), Some(3));
        assert_eq!(
            parse_demand_number("查一下xq-2026-311").as_deref(),
            Some("XQ-2026-000311")
        );
    }

    fn unit(values: &[f32]) -> Vec<f32> {
        let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
        values.iter().map(|v| v / norm).collect()
    }

    #[test]
    fn the_nearest_examples_decide_and_a_clear_lead_is_confident() {
        let router = Router::new(
            vec![
                ("greeting".into(), unit(&[1.0, 0.0, 0.0])),
                ("greeting".into(), unit(&[0.9, 0.1, 0.0])),
                ("science_question".into(), unit(&[0.0, 1.0, 0.0])),
                ("science_question".into(), unit(&[0.1, 0.9, 0.1])),
                ("tech_demand".into(), unit(&[0.0, 0.9, 0.2])),
            ],
            vec![prompts::RouteCue {
                route: "tech_demand".into(),
                bonus: 0.3,
                pattern: "找专家".into(),
                line: 1,
            }],
        )
        .expect("router");
        let decision = router.route("你好", &unit(&[0.95, 0.05, 0.0]), Signals::default());
        assert_eq!(decision.route, Route::Greeting);
        assert!(decision.confidence > 0.9);
        let decision = router.route("问", &unit(&[0.05, 1.0, 0.0]), Signals::default());
        assert_eq!(decision.route, Route::ScienceQuestion);
        // The same topic with an intent cue goes to the cue's route.
        let decision = router.route("想找专家", &unit(&[0.05, 1.0, 0.0]), Signals::default());
        assert_eq!(decision.route, Route::TechDemand);
        assert!(matches!(
            Router::new(vec![("nonsense".into(), vec![1.0])], Vec::new()),
            Err(RouterError::UnknownRoute(_))
        ));
        let bad_cue = prompts::RouteCue {
            route: "greeting".into(),
            bonus: 0.1,
            pattern: "(".into(),
            line: 7,
        };
        assert!(matches!(
            Router::new(Vec::new(), vec![bad_cue]),
            Err(RouterError::Cue { line: 7, .. })
        ));
    }
}
