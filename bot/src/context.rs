//! Follow-up resolution: "那打啥子药？" after a question on potato late
//! blight means "马铃薯晚疫病打啥子药"; "那红苕呢" means the same question
//! about sweet potato.
//!
//! Pure functions over the message (already normalised and rewritten by the
//! KB's analyzer, so 洋芋 reads 马铃薯), the session's [`Topic`] and a
//! [`Vocabulary`] of crops and subject words. The engine retrieves with the
//! resolved query and stores the new topic.

use std::collections::{HashMap, HashSet};

use crate::session::Topic;

/// Crop, animal and subject words the resolver recognises.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    /// Surface form → standard crop name, longest surface first.
    crops: Vec<(String, String)>,
    /// Subject words: diseases, pests, hazards, foods (standard forms).
    subjects: HashSet<String>,
    /// For subjects specific to some crops (稻瘟病 → 水稻), those crops.
    crops_of_subject: HashMap<String, HashSet<String>>,
}

/// Colloquial names of crops and animals that the synonym dictionary
/// leaves alone because they are also ordinary words in other contexts
/// (小猪 is not always 生猪 in a sentence, but in a follow-up it is).
const CROP_ALIASES: &[(&str, &str)] = &[
    ("小猪", "生猪"),
    ("仔猪", "生猪"),
    ("母猪", "生猪"),
    ("肥猪", "生猪"),
    ("猪", "生猪"),
    ("小鸡", "鸡"),
    ("鸡苗", "鸡"),
    ("鸡", "鸡"),
    ("鸭", "鸭"),
    ("鱼塘", "鱼"),
    ("鱼", "鱼"),
    ("茶园", "茶叶"),
    ("茶树", "茶叶"),
    ("春茶", "茶叶"),
    ("夏茶", "茶叶"),
    ("秧苗", "水稻"),
    ("稻谷", "水稻"),
    ("橘子", "柑橘"),
    ("桔子", "柑橘"),
];

/// Words that mark a message as leaning on the previous one.
const FOLLOW_UP_STARTS: &[&str] = &["那么", "那", "还有", "另外", "它", "这个", "这种", "那个"];
const FOLLOW_UP_ENDS: &[&str] = &["呢", "呢?", "呢？"];
const PRONOUNS: &[&str] = &["它", "这个病", "这种病", "这个虫", "这种虫", "这样"];
/// A message this short (in characters) with no subject of its own is a
/// follow-up whenever there is a topic.
const SHORT_MESSAGE_CHARS: usize = 15;

impl Vocabulary {
    /// A vocabulary from the knowledge base's crop names and subject words
    /// (tags and domain terms); the built-in colloquial aliases are added.
    pub fn new(
        crops: impl IntoIterator<Item = String>,
        subjects: impl IntoIterator<Item = String>,
    ) -> Self {
        let mut by_surface: HashMap<String, String> = CROP_ALIASES
            .iter()
            .map(|(surface, standard)| ((*surface).to_owned(), (*standard).to_owned()))
            .collect();
        let mut standard_crops = HashSet::new();
        for crop in crops {
            let crop = crop.trim().to_owned();
            if crop.chars().count() < 1 {
                continue;
            }
            standard_crops.insert(crop.clone());
            by_surface.insert(crop.clone(), crop);
        }
        let mut crops: Vec<(String, String)> = by_surface.into_iter().collect();
        crops.sort_by(|a, b| {
            b.0.chars()
                .count()
                .cmp(&a.0.chars().count())
                .then(a.0.cmp(&b.0))
        });
        let subjects = subjects
            .into_iter()
            .map(|s| s.trim().to_owned())
            // Single characters are too ambiguous to be a subject.
            .filter(|s| s.chars().count() >= 2 && !standard_crops.contains(s))
            .collect();
        Self {
            crops,
            subjects,
            crops_of_subject: HashMap::new(),
        }
    }

    /// A vocabulary from what the knowledge base's published entries are about.
    pub fn from_kb(kb: kb::TopicVocabulary) -> Self {
        let mut vocabulary = Self::new(kb.crops, kb.subjects);
        vocabulary.crops_of_subject = kb
            .crops_of_subject
            .into_iter()
            .filter(|(_, crops)| !crops.is_empty())
            .map(|(subject, crops)| (subject, crops.into_iter().collect()))
            .collect();
        vocabulary
    }

    /// Whether every subject that is specific to some crops is specific to
    /// one of `crops` too (so "追肥" fits any crop, "稻瘟病" only rice).
    fn subjects_fit(&self, subjects: &[String], crops: &[String]) -> bool {
        subjects.iter().all(|subject| {
            self.crops_of_subject
                .get(subject)
                .is_none_or(|own| crops.iter().any(|crop| own.contains(crop)))
        })
    }

    /// Standard names of the crops a text mentions, in order of mention,
    /// longest match first (仔猪 before 猪).
    pub fn crops_in(&self, text: &str) -> Vec<String> {
        let mut found: Vec<(usize, String)> = Vec::new();
        let mut taken = vec![false; text.len()];
        for (surface, standard) in &self.crops {
            for (start, _) in text.match_indices(surface.as_str()) {
                let end = start + surface.len();
                if taken[start..end].iter().any(|t| *t) {
                    continue;
                }
                taken[start..end].iter_mut().for_each(|t| *t = true);
                if !found.iter().any(|(_, s)| s == standard) {
                    found.push((start, standard.clone()));
                }
            }
        }
        found.sort_by_key(|(start, _)| *start);
        found.into_iter().map(|(_, crop)| crop).collect()
    }

    /// Subject words a text mentions (longest first, not overlapping a crop).
    pub fn subjects_in(&self, text: &str) -> Vec<String> {
        let mut found: Vec<&String> = self
            .subjects
            .iter()
            .filter(|subject| text.contains(subject.as_str()))
            .collect();
        found.sort_by(|a, b| b.chars().count().cmp(&a.chars().count()).then(a.cmp(b)));
        let mut kept: Vec<String> = Vec::new();
        for subject in found {
            if kept.iter().any(|k| k.contains(subject.as_str())) {
                continue;
            }
            kept.push(subject.clone());
        }
        kept
    }

    /// Whether the vocabulary knows this subject word.
    pub fn is_subject(&self, word: &str) -> bool {
        self.subjects.contains(word)
    }
}

/// A message read in the light of the conversation so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// What to search for.
    pub query: String,
    /// Whether the message leaned on the previous topic.
    pub follow_up: bool,
    /// The crops the resolved question is about.
    pub crops: Vec<String>,
    /// Its subject words.
    pub subjects: Vec<String>,
    /// The message moved the same question to another crop ("那红苕呢"):
    /// only entries about [`Self::crops`] can answer it.
    pub crop_switch: bool,
}

fn strip_follow_up_markers(text: &str) -> &str {
    let mut rest = text.trim();
    for start in FOLLOW_UP_STARTS {
        if let Some(stripped) = rest.strip_prefix(start) {
            rest = stripped.trim_start_matches([',', '，', ' ']);
            break;
        }
    }
    for end in FOLLOW_UP_ENDS {
        if let Some(stripped) = rest.strip_suffix(end) {
            rest = stripped;
            break;
        }
    }
    rest.trim()
}

fn leans_on_context(text: &str) -> bool {
    let trimmed = text.trim_end_matches(['?', '？', '。', '!', '！']);
    FOLLOW_UP_STARTS.iter().any(|s| trimmed.starts_with(s))
        || FOLLOW_UP_ENDS.iter().any(|e| trimmed.ends_with(e))
        || PRONOUNS.iter().any(|p| trimmed.contains(p))
}

/// Reads `text` (the analyzer's rewritten form of the message) against
/// the previous topic.
pub fn resolve(text: &str, topic: Option<&Topic>, vocabulary: &Vocabulary) -> Resolution {
    let crops = vocabulary.crops_in(text);
    let subjects = vocabulary.subjects_in(text);
    let standalone = Resolution {
        query: text.to_owned(),
        follow_up: false,
        crops: crops.clone(),
        subjects: subjects.clone(),
        crop_switch: false,
    };
    let Some(topic) = topic else {
        return standalone;
    };
    let leaning = leans_on_context(text);
    let short = text.chars().count() <= SHORT_MESSAGE_CHARS;
    let rest = strip_follow_up_markers(text);

    match (crops.is_empty(), subjects.is_empty()) {
        // A crop and a subject of its own: a new question.
        (false, false) => standalone,
        // A new crop, nothing else: the same question about another crop.
        (false, true) if leaning || short => {
            // After a topic without crops (中暑了怎么急救), a message that
            // names a crop and says something of its own (洋芋叶子发黑咋个办)
            // asks something new; only "那洋芋呢" carries the topic over.
            let says_more = !without_words(rest, &crops).trim().is_empty();
            if topic.crops.is_empty() && !leaning && says_more {
                return standalone;
            }
            let previous_crop = topic
                .crops
                .iter()
                .find(|c| topic.query.contains(c.as_str()));
            let query = match previous_crop {
                Some(old) if !topic.crops.iter().any(|c| crops.contains(c)) => {
                    // The old crop's diseases and pests rarely carry over
                    // (sweet potato has no late blight): keep the question,
                    // drop its subjects.
                    let swapped = without_words(
                        &topic.query.replacen(old.as_str(), &crops[0], 1),
                        &topic.subjects,
                    );
                    join(&[&swapped, &without_words(rest, &crops)])
                }
                _ => join(&[&topic.subjects.join(" "), rest]),
            };
            Resolution {
                query,
                follow_up: true,
                crops,
                subjects: Vec::new(),
                crop_switch: true,
            }
        }
        (false, true) => standalone,
        // A new subject without a crop, leaning on the topic ("那二化螟呢",
        // "要不要追肥"): the same crop, unless the subject belongs to other
        // crops only (稻瘟病 after a potato question is about rice).
        (true, false)
            if (leaning || short)
                && !topic.crops.is_empty()
                && vocabulary.subjects_fit(&subjects, &topic.crops) =>
        {
            Resolution {
                query: join(&[&topic.crops.join(" "), rest]),
                follow_up: true,
                crops: topic.crops.clone(),
                subjects,
                crop_switch: false,
            }
        }
        (true, false) => standalone,
        // Neither crop nor subject: an ellipsis ("那打啥子药", "要多少量").
        (true, true) if leaning || short => {
            let mut context: Vec<&str> = topic.crops.iter().map(String::as_str).collect();
            context.extend(topic.subjects.iter().map(String::as_str));
            if context.is_empty() {
                context.push(topic.query.as_str());
            }
            Resolution {
                query: join(&[&context.join(" "), rest]),
                follow_up: true,
                crops: topic.crops.clone(),
                subjects: topic.subjects.clone(),
                crop_switch: false,
            }
        }
        (true, true) => standalone,
    }
}

fn without_words(text: &str, words: &[String]) -> String {
    let mut out = text.to_owned();
    for word in words {
        out = out.replace(word.as_str(), "");
    }
    out
}

fn join(parts: &[&str]) -> String {
    parts
        .iter()
        .flat_map(|p| p.split_whitespace())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocabulary() -> Vocabulary {
        Vocabulary::new(
            ["马铃薯", "甘薯", "水稻", "玉米", "辣椒", "柑橘", "生猪"].map(String::from),
            [
                "晚疫病",
                "稻飞虱",
                "二化螟",
                "草地贪夜蛾",
                "地震",
                "黄龙病",
                "木虱",
            ]
            .map(String::from),
        )
    }

    fn topic(query: &str, crops: &[&str], subjects: &[&str]) -> Topic {
        Topic {
            query: query.into(),
            crops: crops.iter().map(|s| (*s).to_owned()).collect(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            ..Topic::default()
        }
    }

    /// (message, previous topic, resolved query, follow-up?)
    #[test]
    fn follow_ups_are_read_against_the_topic() {
        let potato = topic("马铃薯叶子发黑咋个办", &["马铃薯"], &["晚疫病"]);
        let blight = topic("马铃薯晚疫病咋个防", &["马铃薯"], &["晚疫病"]);
        let rice = topic("稻飞虱咋个治", &["水稻"], &["稻飞虱"]);
        let quake = topic("地震来了在楼上应该怎么躲", &[], &["地震"]);
        let cases: Vec<(&str, Option<&Topic>, &str, bool)> = vec![
            ("那打啥子药", Some(&potato), "马铃薯 晚疫病 打啥子药", true),
            ("要多少量", Some(&potato), "马铃薯 晚疫病 要多少量", true),
            ("那甘薯呢", Some(&potato), "甘薯叶子发黑咋个办", true),
            ("那甘薯呢", Some(&blight), "甘薯咋个防", true),
            ("那二化螟呢", Some(&rice), "水稻 二化螟", true),
            ("那在田里呢", Some(&quake), "地震 在田里", true),
            // After a topic without crops, a crop with words of its own
            // is a new question; the crop alone still carries the topic.
            (
                "马铃薯叶子发黑怎么办",
                Some(&quake),
                "马铃薯叶子发黑怎么办",
                false,
            ),
            ("那马铃薯呢", Some(&quake), "地震 马铃薯", true),
            (
                "玉米草地贪夜蛾怎么防",
                Some(&potato),
                "玉米草地贪夜蛾怎么防",
                false,
            ),
            ("那打啥子药", None, "那打啥子药", false),
            (
                "柑橘黄龙病能治好吗，我家果园好多树都黄了",
                Some(&potato),
                "柑橘黄龙病能治好吗，我家果园好多树都黄了",
                false,
            ),
        ];
        for (text, topic, expected, follow_up) in cases {
            let resolved = resolve(text, topic, &vocabulary());
            assert_eq!(resolved.query, expected, "{text}");
            assert_eq!(resolved.follow_up, follow_up, "{text}");
        }
    }

    #[test]
    fn a_subject_of_another_crop_starts_a_new_question() {
        let mut kb = kb::TopicVocabulary::default();
        kb.crops.extend(["马铃薯", "水稻"].map(String::from));
        kb.subjects.extend(["稻瘟病", "追肥"].map(String::from));
        kb.crops_of_subject
            .insert("稻瘟病".into(), ["水稻".to_owned()].into_iter().collect());
        let vocabulary = Vocabulary::from_kb(kb);
        let rice = topic("水稻秧苗发黄咋回事", &["水稻"], &[]);
        let potato = topic("马铃薯叶子发黑咋个办", &["马铃薯"], &["晚疫病"]);
        let resolved = resolve("要不要追肥", Some(&rice), &vocabulary);
        assert_eq!(resolved.query, "水稻 要不要追肥");
        let resolved = resolve("稻瘟病用什么药", Some(&potato), &vocabulary);
        assert_eq!(resolved.query, "稻瘟病用什么药");
        assert!(!resolved.follow_up);
    }

    #[test]
    fn crops_are_found_longest_first_with_colloquial_names() {
        let vocabulary = vocabulary();
        assert_eq!(
            vocabulary.crops_in("小猪拉稀咋个治"),
            vec!["生猪".to_owned()]
        );
        assert_eq!(
            vocabulary.crops_in("玉米和水稻都淹了"),
            vec!["玉米".to_owned(), "水稻".to_owned()]
        );
        assert!(vocabulary.crops_in("隔夜菜会致癌吗").is_empty());
    }
}
