//! The subject lexicon: the crops, animals, foods, pests, diseases,
//! illnesses and hazards a question can be about (`kb/dict/entities.txt`).
//!
//! Retrieval uses it for one check that the search scores cannot make. The
//! dense and lexical searches find the entry whose wording is closest, and
//! for a template question ("X丝黑穗病怎么防治") that is often the same
//! disease on another crop: 高粱丝黑穗病 finds the maize entry. A question
//! that names crops, animals or foods of which the entry mentions none, or
//! a pest, illness or hazard the entry never mentions, is probably not
//! answered by it, however close the wording.
//!
//! Matching is by substring on normalised text, not by segmenter tokens, so
//! editing the lexicon changes no stored index text and needs no re-index.

use std::collections::HashMap;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::text::{Synonyms, normalise, parse_dictionary_rows};

/// What kind of thing a subject word names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    /// A crop, vegetable, fruit, mushroom or medicinal plant (作物).
    Crop,
    /// Livestock, poultry, fish or another animal (动物).
    Animal,
    /// A plant or animal disease or pest (病虫害).
    PestOrDisease,
    /// A human illness or condition (疾病).
    Illness,
    /// A weather event or natural hazard (灾害).
    Hazard,
    /// A food or drink (食物).
    Food,
}

impl SubjectKind {
    /// Reads the kind column of `entities.txt`.
    pub fn from_label(label: &str) -> Option<Self> {
        match label {
            "作物" => Some(Self::Crop),
            "动物" => Some(Self::Animal),
            "病虫害" => Some(Self::PestOrDisease),
            "疾病" => Some(Self::Illness),
            "灾害" => Some(Self::Hazard),
            "食物" => Some(Self::Food),
            _ => None,
        }
    }

    /// Which group of a question's subjects the word belongs to.
    fn group(self) -> SubjectGroup {
        match self {
            Self::Crop | Self::Animal => SubjectGroup::Farmed,
            Self::Food => SubjectGroup::Eaten,
            Self::PestOrDisease | Self::Illness | Self::Hazard => SubjectGroup::Problem,
        }
    }
}

/// How the subject check treats a word. A question may name several
/// things it is about (红苕喂猪: sweet potato and pigs): an entry that
/// mentions one of them fits. Every problem it names must be mentioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubjectGroup {
    /// Crops and animals; checked only against entries about particular
    /// ones.
    Farmed,
    /// Foods and drinks; checked against every entry (a rumour entry about
    /// 隔夜菜 does not answer a question about 隔夜茶).
    Eaten,
    /// Pests, diseases, illnesses and hazards.
    Problem,
}

/// One word of the lexicon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The word, in the standard form the synonym dictionary rewrites to.
    pub word: String,
    /// What it names.
    pub kind: SubjectKind,
}

/// The subject words, found in questions by leftmost-longest match (so
/// 玉米螟 is a pest, not the crop 玉米).
#[derive(Debug, Clone, Default)]
pub struct SubjectLexicon {
    subjects: Vec<Subject>,
    /// For each subject, the spellings an entry may use for it: the word
    /// and the synonym dictionary's variants of it (an answer may say 洋芋
    /// where the question was rewritten to 马铃薯).
    spellings: Vec<Vec<String>>,
    /// Finds subject words in rewritten questions.
    matcher: Option<AhoCorasick>,
    /// Finds any spelling in an entry's own texts, which are not rewritten;
    /// pattern `i` spells subject `spelling_subject[i]`.
    spelling_matcher: Option<AhoCorasick>,
    spelling_subject: Vec<usize>,
}

impl SubjectLexicon {
    /// Parses the `名称<TAB>类别` lines of `entities.txt`; `#` comments and
    /// blank lines are ignored. Returns the subjects and the numbers of
    /// malformed lines (no tab, or an unknown kind).
    pub fn parse_tsv(text: &str) -> (Vec<Subject>, Vec<usize>) {
        parse_dictionary_rows(text, |line| {
            let (word, label) = line.split_once('\t')?;
            let word = word.trim();
            let kind = SubjectKind::from_label(label.trim())?;
            (!word.is_empty()).then(|| Subject {
                word: word.to_owned(),
                kind,
            })
        })
    }

    /// Builds the lexicon. Words are normalised like queries; a word listed
    /// twice keeps its first kind.
    pub fn new(subjects: impl IntoIterator<Item = Subject>, synonyms: &Synonyms) -> Self {
        let mut variants_of: HashMap<&str, Vec<String>> = HashMap::new();
        for (variant, standard) in synonyms.pairs() {
            variants_of
                .entry(standard.as_str())
                .or_default()
                .push(variant.clone());
        }
        let mut kept: Vec<Subject> = Vec::new();
        for subject in subjects {
            let word = normalise(&subject.word);
            if word.is_empty() || kept.iter().any(|k| k.word == word) {
                continue;
            }
            kept.push(Subject {
                word,
                kind: subject.kind,
            });
        }
        let spellings: Vec<Vec<String>> = kept
            .iter()
            .map(|subject| {
                let mut spellings = vec![subject.word.clone()];
                spellings.extend(
                    variants_of
                        .get(subject.word.as_str())
                        .cloned()
                        .unwrap_or_default(),
                );
                spellings
            })
            .collect();
        let matcher = leftmost_longest(kept.iter().map(|subject| subject.word.as_str()));
        let (spelling_subject, all_spellings): (Vec<usize>, Vec<&str>) = spellings
            .iter()
            .enumerate()
            .flat_map(|(index, spelled)| spelled.iter().map(move |s| (index, s.as_str())))
            .unzip();
        let spelling_matcher = leftmost_longest(all_spellings);
        Self {
            subjects: kept,
            spellings,
            matcher,
            spelling_matcher,
            spelling_subject,
        }
    }

    /// Whether `text`, in any spelling, names a subject of `group`.
    fn names_any_of(&self, text: &str, group: SubjectGroup) -> bool {
        let Some(matcher) = &self.spelling_matcher else {
            return false;
        };
        matcher.find_iter(text).any(|found| {
            let subject = self.spelling_subject[found.pattern().as_usize()];
            self.subjects[subject].kind.group() == group
        })
    }

    /// The subjects, in the order they were listed.
    pub fn subjects(&self) -> &[Subject] {
        &self.subjects
    }

    /// The subjects a question names. `rewritten` is the query after
    /// normalisation and synonym rewriting (see `Analyzer::analyze_query`).
    pub fn in_question(&self, rewritten: &str) -> QuestionSubjects<'_> {
        let mut named: Vec<usize> = Vec::new();
        if let Some(matcher) = &self.matcher {
            for found in matcher.find_iter(rewritten) {
                let index = found.pattern().as_usize();
                if !named.contains(&index) {
                    named.push(index);
                }
            }
        }
        QuestionSubjects {
            lexicon: self,
            named,
        }
    }
}

/// An automaton finding `patterns` leftmost-longest (so 玉米螟 is found as
/// a pest, not as the crop 玉米); none for no patterns.
fn leftmost_longest<'p>(patterns: impl IntoIterator<Item = &'p str>) -> Option<AhoCorasick> {
    let patterns: Vec<&str> = patterns.into_iter().collect();
    if patterns.is_empty() {
        return None;
    }
    AhoCorasickBuilder::new()
        .match_kind(MatchKind::LeftmostLongest)
        .build(patterns)
        .ok()
}

/// The subject words one question names.
#[derive(Debug, Clone)]
pub struct QuestionSubjects<'l> {
    lexicon: &'l SubjectLexicon,
    /// Indexes into the lexicon, in order of first mention.
    named: Vec<usize>,
}

impl<'l> QuestionSubjects<'l> {
    /// The words named, in order of first mention.
    pub fn words(&self) -> impl Iterator<Item = &'l str> + '_ {
        let lexicon = self.lexicon;
        self.named
            .iter()
            .map(move |&index| lexicon.subjects[index].word.as_str())
    }

    /// Whether `entry` leaves the question's subject unmet: the question
    /// names crops or animals and the entry, being about particular ones
    /// (it lists crops, or its question or tags name a crop or animal),
    /// mentions none of them; or it names foods and the entry mentions
    /// none of them; or it names a pest, disease, illness or hazard the
    /// entry never mentions.
    pub fn unmet_by(&self, entry: &EntryMentions<'_>) -> bool {
        let mentioned = |index: usize| {
            self.lexicon.spellings[index].iter().any(|spelling| {
                entry
                    .texts
                    .iter()
                    .any(|text| text.contains(spelling.as_str()))
            })
        };
        let in_group = |group: SubjectGroup| {
            self.named
                .iter()
                .copied()
                .filter(move |&index| self.lexicon.subjects[index].kind.group() == group)
        };
        let none_met = |group: SubjectGroup| {
            let mut named = in_group(group).peekable();
            named.peek().is_some() && !named.any(mentioned)
        };
        let about_particular_objects = entry.has_crops
            || entry
                .topics
                .iter()
                .any(|topic| self.lexicon.names_any_of(topic, SubjectGroup::Farmed));
        (about_particular_objects && none_met(SubjectGroup::Farmed))
            || none_met(SubjectGroup::Eaten)
            || in_group(SubjectGroup::Problem).any(|index| !mentioned(index))
    }
}

/// What an entry says, for [`QuestionSubjects::unmet_by`].
#[derive(Debug, Clone, Default)]
pub struct EntryMentions<'e> {
    /// Every text of the entry that can name what it is about: question,
    /// phrasings, answer, short answer, tags and crops.
    pub texts: Vec<&'e str>,
    /// The texts that say what the entry is about: its question and tags.
    /// An entry whose topics name a crop or animal (鸡新城疫怎么预防) is
    /// about that one, not about pigeons.
    pub topics: Vec<&'e str>,
    /// Whether the entry lists crops it is about. An entry with none, and
    /// no crop or animal in its topics (农田被洪水淹了怎么补救), fits
    /// whichever crop a question names.
    pub has_crops: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lexicon() -> SubjectLexicon {
        let (subjects, bad_lines) = SubjectLexicon::parse_tsv(
            "# 注释\n玉米\t作物\n高粱\t作物\n马铃薯\t作物\n猪\t动物\n甘薯\t作物\n\
             鸡\t动物\n鸽子\t动物\n丝黑穗病\t病虫害\n玉米螟\t病虫害\n白绢病\t病虫害\n\
             新城疫\t病虫害\n",
        );
        assert!(bad_lines.is_empty());
        SubjectLexicon::new(
            subjects,
            &Synonyms::new([("洋芋".to_owned(), "马铃薯".to_owned())]),
        )
    }

    #[test]
    fn malformed_lines_are_reported_by_number() {
        let (subjects, bad_lines) =
            SubjectLexicon::parse_tsv("玉米\t作物\n高粱\n\n鸽子\t鸟类\n\t作物\n");
        assert_eq!(subjects.len(), 1);
        assert_eq!(bad_lines, vec![2, 4, 5]);
    }

    #[test]
    fn questions_name_subjects_longest_first() {
        let lexicon = lexicon();
        let named: Vec<&str> = lexicon
            .in_question("玉米螟和玉米丝黑穗病")
            .words()
            .collect();
        assert_eq!(named, vec!["玉米螟", "玉米", "丝黑穗病"]);
    }

    #[test]
    fn the_check_reads_the_whole_entry_and_its_dialect_spellings() {
        let lexicon = lexicon();
        let about = |texts: &[&'static str]| EntryMentions {
            texts: texts.to_vec(),
            topics: texts[..1].to_vec(),
            has_crops: true,
        };
        // No crops listed: what the entry is about is read from its
        // question (its first text).
        let no_crops = |texts: &[&'static str]| EntryMentions {
            texts: texts.to_vec(),
            topics: texts[..1].to_vec(),
            has_crops: false,
        };
        // Data-driven: (question as rewritten, entry, unmet?).
        let cases: Vec<(&str, EntryMentions, bool)> = vec![
            // The same disease on another crop.
            (
                "高粱丝黑穗病怎么防治",
                about(&["玉米丝黑穗病怎么防治", "玉米"]),
                true,
            ),
            (
                "玉米丝黑穗病怎么防治",
                about(&["玉米丝黑穗病怎么防治", "玉米"]),
                false,
            ),
            // One of two objects is enough: the entry is about sweet potato.
            (
                "有黑斑的甘薯能喂猪吗",
                about(&["甘薯黑斑病", "甘薯"]),
                false,
            ),
            // An entry for every crop fits any crop...
            (
                "玉米被淹了怎么补救",
                no_crops(&["农田被淹了怎么补救"]),
                false,
            ),
            // ...but not a disease it never mentions.
            ("玉米白绢病", no_crops(&["农田被淹了怎么补救"]), true),
            // An entry whose question names an animal is about that
            // animal, crops listed or not.
            ("鸽子新城疫怎么治", no_crops(&["鸡新城疫怎么预防"]), true),
            ("鸡新城疫怎么治", no_crops(&["鸡新城疫怎么预防"]), false),
            // Topics are read in their dialect spellings too.
            ("高粱丝黑穗病", no_crops(&["洋芋丝黑穗病", "高粱"]), false),
            ("玉米丝黑穗病", no_crops(&["洋芋丝黑穗病"]), true),
            ("马铃薯白绢病", about(&["马铃薯晚疫病", "马铃薯"]), true),
            // The entry says 洋芋 where the question was rewritten.
            ("马铃薯丝黑穗病", about(&["洋芋也会得丝黑穗病"]), false),
            // No subject named: nothing to check.
            ("怎么施肥", about(&["水稻施肥"]), false),
        ];
        for (question, entry, unmet) in &cases {
            assert_eq!(
                lexicon.in_question(question).unmet_by(entry),
                *unmet,
                "{question} against {entry:?}"
            );
        }
    }
}
