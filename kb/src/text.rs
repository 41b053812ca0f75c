//! Chinese text handling for retrieval: normalisation, segmentation with a
//! domain dictionary, dialect/synonym rewriting and pinyin typo correction.
//!
//! Every text that is indexed or searched goes through [`Analyzer`], so the
//! index and the queries always agree on what a word is.

use std::collections::{HashMap, HashSet};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use jieba_rs::Jieba;
use pinyin::ToPinyin;
use serde::Serialize;

use crate::subjects::{Subject, SubjectLexicon};

/// Normalises user or editor text: full-width ASCII and the ideographic space
/// to half-width, traditional to simplified characters, ASCII lower-cased,
/// decoration (emoji, symbols, control characters) removed, runs of the same
/// punctuation or of one repeated character (≥ 3, digits excepted) collapsed,
/// white space folded.
pub fn normalise(text: &str) -> String {
    let half_width: String = text.chars().map(to_half_width).collect();
    let simplified = fast2s::convert(&half_width);
    let cleaned: Vec<char> = simplified
        .chars()
        .map(|c| {
            if c.is_whitespace() {
                ' '
            } else {
                c.to_ascii_lowercase()
            }
        })
        .filter(|c| !is_decoration(*c))
        .collect();
    let mut out = String::with_capacity(simplified.len());
    for run in cleaned.chunk_by(|a, b| a == b) {
        let c = run[0];
        // Repeated spaces and punctuation fold to one; a character repeated three
        // or more times ("好好好好") folds to one, while doubled words (看看) stay.
        // Digits never fold: "稀释1000倍" is not "稀释10倍".
        let keep = if c == ' ' || is_punctuation(c) || (run.len() >= 3 && !is_digit(c)) {
            1
        } else {
            run.len()
        };
        out.extend(std::iter::repeat_n(c, keep));
    }
    out.trim().to_owned()
}

/// A digit of a number as people write it: ASCII (full-width ones are
/// already half-width here) or the zero of Chinese numerals (二〇〇〇年).
fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || c == '〇' || c == '零'
}

/// Full-width ASCII and the ideographic space to their half-width forms.
pub fn to_half_width(c: char) -> char {
    match c {
        '\u{3000}' => ' ',
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        _ => c,
    }
}

fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || "，。！？；：、“”‘’（）《》【】…—～·「」『』".contains(c)
}

/// Emoji, pictographs, dingbats, variation selectors and control characters.
fn is_decoration(c: char) -> bool {
    let code = c as u32;
    c.is_control()
        || (0x1F000..=0x1FAFF).contains(&code)
        || (0x2600..=0x27BF).contains(&code)
        || (0xFE00..=0xFE0F).contains(&code)
        || code == 0x200D
        || (0x2190..=0x21FF).contains(&code)
        || (0x25A0..=0x25FF).contains(&code)
        || (0x2B00..=0x2BFF).contains(&code)
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF)
}

/// Words that carry no retrieval signal in questions.
const STOPWORDS: &[&str] = &[
    "的",
    "了",
    "吗",
    "呢",
    "吧",
    "啊",
    "呀",
    "嘛",
    "么",
    "是",
    "我",
    "你",
    "他",
    "她",
    "它",
    "我们",
    "你们",
    "这",
    "那",
    "这个",
    "那个",
    "有",
    "在",
    "和",
    "与",
    "及",
    "或",
    "也",
    "都",
    "就",
    "还",
    "又",
    "要",
    "会",
    "能",
    "可以",
    "怎么",
    "怎样",
    "怎么样",
    "如何",
    "什么",
    "啥",
    "啥子",
    "咋",
    "咋个",
    "咋办",
    "怎么办",
    "办",
    "为什么",
    "为啥",
    "哪些",
    "哪个",
    "一下",
    "请问",
    "请",
    "问",
    "一个",
    "一些",
    "得",
    "地",
    "着",
    "过",
    "把",
    "被",
    "给",
    "让",
    "对",
    "从",
    "到",
    "向",
    "于",
    "以",
    "之",
    "其",
    "该",
    "多少",
    "几",
    "个",
    "哦",
    "嗯",
    "哈",
    "喔",
    "噻",
    "嘞",
    "不",
    "没",
    "没有",
];

/// One rewrite the analyzer applied to a query, shown to editors as evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rewrite {
    /// What the user wrote.
    pub from: String,
    /// What it was read as.
    pub to: String,
    /// Why: `synonym` (dictionary) or `pinyin` (same sound as a domain term).
    pub kind: RewriteKind,
}

/// The kind of a [`Rewrite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RewriteKind {
    /// A dialect word or synonym from the dictionary.
    Synonym,
    /// An input-method typo: same pinyin as a domain term.
    Pinyin,
}

/// A query after analysis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnalyzedQuery {
    /// After [`normalise`].
    pub normalised: String,
    /// After synonym and typo rewrites: the text that is embedded and matched.
    pub rewritten: String,
    /// The rewrites applied.
    pub rewrites: Vec<Rewrite>,
    /// Lexical tokens (segmented, stopwords removed).
    pub tokens: Vec<String>,
}

/// Reads the rows of a dictionary file (`synonyms.tsv`, `terms.txt`,
/// `entities.txt`): each line trimmed, blank lines and `#` comments skipped,
/// the rest given to `parse_row`. Returns the rows it read and the 1-based
/// numbers of the lines it could not.
pub(crate) fn parse_dictionary_rows<T>(
    text: &str,
    parse_row: impl Fn(&str) -> Option<T>,
) -> (Vec<T>, Vec<usize>) {
    let mut rows = Vec::new();
    let mut bad_lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_row(line) {
            Some(row) => rows.push(row),
            None => bad_lines.push(index + 1),
        }
    }
    (rows, bad_lines)
}

/// Dialect words and synonyms, mapped to the standard term, applied by
/// leftmost-longest match (so 红苕 is rewritten before 苕).
pub struct Synonyms {
    pairs: Vec<(String, String)>,
    matcher: Option<AhoCorasick>,
}

impl Synonyms {
    /// Builds the dictionary from `(variant, standard)` pairs; later pairs win
    /// over earlier ones with the same variant, and identity pairs are ignored.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut by_variant: HashMap<String, String> = HashMap::new();
        for (variant, standard) in pairs {
            let (variant, standard) = (normalise(&variant), normalise(&standard));
            if variant.is_empty() || standard.is_empty() || variant == standard {
                continue;
            }
            by_variant.insert(variant, standard);
        }
        let mut pairs: Vec<(String, String)> = by_variant.into_iter().collect();
        pairs.sort();
        let matcher = if pairs.is_empty() {
            None
        } else {
            AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .build(pairs.iter().map(|(variant, _)| variant.as_str()))
                .ok()
        };
        Self { pairs, matcher }
    }

    /// Parses the TSV format of `kb/dict/synonyms.tsv`: `variant<TAB>standard`
    /// per line, `#` comments and blank lines ignored. Returns the pairs and the
    /// numbers of malformed lines.
    pub fn parse_tsv(text: &str) -> (Vec<(String, String)>, Vec<usize>) {
        parse_dictionary_rows(text, |line| {
            let (variant, standard) = line.split_once('\t')?;
            let (variant, standard) = (variant.trim(), standard.trim());
            (!variant.is_empty() && !standard.is_empty())
                .then(|| (variant.to_owned(), standard.to_owned()))
        })
    }

    /// The pairs, sorted by variant.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Rewrites every variant in `text` to its standard term.
    pub fn apply(&self, text: &str, rewrites: &mut Vec<Rewrite>) -> String {
        let Some(matcher) = &self.matcher else {
            return text.to_owned();
        };
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for found in matcher.find_iter(text) {
            let (variant, standard) = &self.pairs[found.pattern().as_usize()];
            out.push_str(&text[last..found.start()]);
            out.push_str(standard);
            rewrites.push(Rewrite {
                from: variant.clone(),
                to: standard.clone(),
                kind: RewriteKind::Synonym,
            });
            last = found.end();
        }
        out.push_str(&text[last..]);
        out
    }
}

/// Segmenter plus dictionaries: the one place that decides what a word is.
pub struct Analyzer {
    jieba: Jieba,
    synonyms: Synonyms,
    /// Toneless pinyin of a domain term → the term, for typo correction.
    pinyin_terms: HashMap<String, String>,
    terms: HashSet<String>,
    subjects: SubjectLexicon,
    stopwords: HashSet<&'static str>,
}

/// Dictionary frequency from which a word counts as common (jieba's corpus
/// has about 60 million words): 进食 has 232, the rare 牙虫 has 3.
const COMMON_WORD_FREQUENCY: usize = 50;

/// Frequency given to domain terms in the segmenter, high enough that a term
/// such as 稻瘟病 is never split into 稻 / 瘟病.
const DOMAIN_TERM_FREQUENCY: usize = 200_000;

impl Analyzer {
    /// Builds an analyzer from domain terms (kept whole by the segmenter and
    /// used for pinyin correction), synonym pairs and the subject lexicon.
    pub fn new(
        terms: impl IntoIterator<Item = String>,
        synonyms: Synonyms,
        subjects: impl IntoIterator<Item = Subject>,
    ) -> Self {
        let mut jieba = Jieba::new();
        let mut known = HashSet::new();
        let mut pinyin_terms = HashMap::new();
        let all_terms = terms.into_iter().chain(
            synonyms
                .pairs()
                .iter()
                .map(|(_, standard)| standard.clone()),
        );
        for term in all_terms {
            let term = normalise(&term);
            if term.chars().count() < 2 || !known.insert(term.clone()) {
                continue;
            }
            jieba.add_word(&term, Some(DOMAIN_TERM_FREQUENCY), None);
            if let Some(key) = pinyin_key(&term) {
                pinyin_terms.entry(key).or_insert(term);
            }
        }
        for (variant, _) in synonyms.pairs() {
            if variant.chars().count() >= 2 {
                jieba.add_word(variant, Some(DOMAIN_TERM_FREQUENCY), None);
            }
        }
        let subjects = SubjectLexicon::new(subjects, &synonyms);
        Self {
            jieba,
            synonyms,
            pinyin_terms,
            terms: known,
            subjects,
            stopwords: STOPWORDS.iter().copied().collect(),
        }
    }

    /// The synonym dictionary.
    pub fn synonyms(&self) -> &Synonyms {
        &self.synonyms
    }

    /// The domain terms.
    pub fn terms(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(String::as_str)
    }

    /// The subject lexicon (crops, animals, pests, illnesses).
    pub fn subjects(&self) -> &SubjectLexicon {
        &self.subjects
    }

    /// Whether `word` is a known domain term.
    pub fn is_term(&self, word: &str) -> bool {
        self.terms.contains(word)
    }

    /// Normalises, rewrites synonyms and typos, and segments a query.
    pub fn analyze_query(&self, text: &str) -> AnalyzedQuery {
        let normalised = normalise(text);
        let mut rewrites = Vec::new();
        let with_synonyms = self.synonyms.apply(&normalised, &mut rewrites);
        let rewritten = self.correct_typos(&with_synonyms, &mut rewrites);
        let tokens = self.tokens_of_normalised(&rewritten);
        AnalyzedQuery {
            normalised,
            rewritten,
            rewrites,
            tokens,
        }
    }

    /// The canonical form used for exact matching: normalised, synonyms
    /// applied, punctuation and spaces dropped.
    pub fn canonical(&self, text: &str) -> String {
        let mut ignored = Vec::new();
        let rewritten = self.synonyms.apply(&normalise(text), &mut ignored);
        rewritten
            .chars()
            .filter(|c| !is_punctuation(*c) && !c.is_whitespace())
            .collect()
    }

    /// How much a word says about what is asked, as an inverse document
    /// frequency estimated from the segmenter's dictionary (about 60 million
    /// words of general Chinese): 的 or 怎么 weigh little, 软化 or 血管
    /// much. Domain terms weigh as much as the rarest words. Used to weigh
    /// word coverage; the ranking's own IDF comes from Qdrant.
    pub fn word_weight(&self, word: &str) -> f32 {
        const DICTIONARY_TOTAL: f32 = 60_000_000.0;
        const MAX_WEIGHT: f32 = 12.0;
        if self.terms.contains(word) {
            return MAX_WEIGHT;
        }
        let frequency = self.jieba.suggest_freq(word).max(1) as f32;
        (DICTIONARY_TOTAL / frequency).ln().clamp(0.5, MAX_WEIGHT)
    }

    /// The text given to the embedding model: normalised, with dialect
    /// words rewritten, so 洋芋 and 马铃薯 embed alike on both sides.
    pub fn embedding_text(&self, text: &str) -> String {
        let mut ignored = Vec::new();
        self.synonyms.apply(&normalise(text), &mut ignored)
    }

    /// Lexical tokens of a stored text (an entry's question, phrasing or
    /// answer), with synonyms applied so dialect and standard words meet.
    pub fn index_tokens(&self, text: &str) -> Vec<String> {
        let mut ignored = Vec::new();
        let rewritten = self.synonyms.apply(&normalise(text), &mut ignored);
        self.tokens_of_normalised(&rewritten)
    }

    fn tokens_of_normalised(&self, text: &str) -> Vec<String> {
        self.jieba
            .cut_for_search(text, true)
            .into_iter()
            .map(|token| token.word.trim())
            .filter(|w| !w.is_empty())
            .filter(|w| !w.chars().all(|c| is_punctuation(c) || c.is_whitespace()))
            .filter(|w| !self.stopwords.contains(w))
            .map(str::to_owned)
            .collect()
    }

    /// Replaces runs of Chinese characters that sound exactly like a domain
    /// term but are written differently (到温病 → 稻瘟病, 牙虫 → 蚜虫), longest first.
    fn correct_typos(&self, text: &str, rewrites: &mut Vec<Rewrite>) -> String {
        if self.pinyin_terms.is_empty() {
            return text.to_owned();
        }
        let chars: Vec<char> = text.chars().collect();
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        'scan: while i < chars.len() {
            for len in (2..=6).rev() {
                let Some(window) = chars.get(i..i + len) else {
                    continue;
                };
                if !window.iter().all(|c| is_cjk(*c)) {
                    continue;
                }
                let candidate: String = window.iter().collect();
                if self.terms.contains(&candidate) {
                    out.push_str(&candidate);
                    i += len;
                    continue 'scan;
                }
                // A common word is not a typo: 进食 sounds like 近视 but
                // means what it says. (Rare dictionary words such as 牙虫,
                // seen 3 times in jieba's corpus, are still corrected.)
                if self.jieba.has_word(&candidate)
                    && self.jieba.suggest_freq(&candidate) >= COMMON_WORD_FREQUENCY
                {
                    continue;
                }
                let Some(key) = pinyin_key(&candidate) else {
                    continue;
                };
                if let Some(term) = self.pinyin_terms.get(&key)
                    && plausible_typo(window, term)
                {
                    rewrites.push(Rewrite {
                        from: candidate,
                        to: term.clone(),
                        kind: RewriteKind::Pinyin,
                    });
                    out.push_str(term);
                    i += len;
                    continue 'scan;
                }
            }
            out.push(chars[i]);
            i += 1;
        }
        out
    }
}

/// Whether `window` can be an input-method typo of `term` (same toneless
/// pinyin already known). Two characters that both differ from a
/// two-character term are more likely another word the segmenter does not
/// know than a typo: 出芽 sounds like 雏鸭, and a seed question must not
/// turn into a duckling one. One shared character (牙虫 for 蚜虫) or a
/// longer window (到温病 for 稻瘟病) is read as a typo.
fn plausible_typo(window: &[char], term: &str) -> bool {
    if window.len() > 2 {
        return true;
    }
    window
        .iter()
        .zip(term.chars())
        .any(|(typed, meant)| *typed == meant)
}

/// Toneless pinyin of an all-Chinese string, syllables joined by spaces.
fn pinyin_key(text: &str) -> Option<String> {
    let mut syllables = Vec::new();
    for c in text.chars() {
        syllables.push(c.to_pinyin()?.plain());
    }
    Some(syllables.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyzer() -> Analyzer {
        Analyzer::new(
            [
                "稻瘟病",
                "蚜虫",
                "马铃薯",
                "晚疫病",
                "草地贪夜蛾",
                "安岳柠檬",
                "近视",
                "雏鸭",
            ]
            .map(String::from),
            Synonyms::new(
                [("洋芋", "马铃薯"), ("红苕", "甘薯"), ("海椒", "辣椒")]
                    .map(|(a, b)| (a.into(), b.into())),
            ),
            Vec::new(),
        )
    }

    #[test]
    fn normalise_folds_width_script_case_decoration_and_repeats() {
        let cases = [
            ("ＡＢＣ１２３", "abc123"),
            ("馬鈴薯晚疫病怎麼防治", "马铃薯晚疫病怎么防治"),
            ("洋芋叶子发黑咋个办？？？", "洋芋叶子发黑咋个办?"),
            ("🌾水稻🥔  怎么 种", "水稻 怎么 种"),
            ("好好好好", "好"),
            ("看看", "看看"),
            ("稀释1000倍液，每亩3333株", "稀释1000倍液,每亩3333株"),
            ("二〇〇〇年", "二〇〇〇年"),
            ("\u{3000}隔夜菜\u{7}", "隔夜菜"),
        ];
        for (input, expected) in cases {
            assert_eq!(normalise(input), expected, "{input:?}");
        }
    }

    #[test]
    fn synonyms_rewrite_dialect_words() {
        let analyzer = analyzer();
        let query = analyzer.analyze_query("洋芋叶子发黑咋个办");
        assert_eq!(query.rewritten, "马铃薯叶子发黑咋个办");
        assert_eq!(query.rewrites[0].kind, RewriteKind::Synonym);
    }

    #[test]
    fn pinyin_corrects_input_method_typos() {
        let analyzer = analyzer();
        assert_eq!(
            analyzer.analyze_query("到温病怎么防").rewritten,
            "稻瘟病怎么防"
        );
        assert_eq!(analyzer.analyze_query("牙虫咋个治").rewritten, "蚜虫咋个治");
        assert_eq!(analyzer.analyze_query("稻瘟病").rewrites, vec![]);
        // 进食 sounds like the term 近视 but is a word of its own.
        assert_eq!(analyzer.analyze_query("孩子进食少").rewrites, vec![]);
        // 出芽 sounds like the term 雏鸭 but shares no character with it.
        assert_eq!(analyzer.analyze_query("种子能不能出芽").rewrites, vec![]);
    }

    #[test]
    fn domain_terms_stay_whole() {
        let analyzer = analyzer();
        let tokens = analyzer.index_tokens("草地贪夜蛾危害安岳柠檬吗");
        assert!(tokens.contains(&"草地贪夜蛾".to_owned()), "{tokens:?}");
        assert!(tokens.contains(&"安岳柠檬".to_owned()), "{tokens:?}");
    }

    #[test]
    fn canonical_form_ignores_punctuation_and_dialect() {
        let analyzer = analyzer();
        assert_eq!(
            analyzer.canonical("洋芋晚疫病怎么防治？"),
            analyzer.canonical("马铃薯晚疫病怎么防治")
        );
    }
}
