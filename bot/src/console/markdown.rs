//! The Markdown preview of answers: CommonMark (with tables and
//! strikethrough) to HTML, with raw HTML shown as text and links limited to
//! web and mail addresses, so an entry cannot put markup or script into the
//! console.

use pulldown_cmark::{CowStr, Event, Options, Parser, Tag};

fn safe_link(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    lower.starts_with("https://")
        || lower.starts_with("http://")
        || lower.starts_with("mailto:")
        || lower.starts_with('/')
        || lower.starts_with('#')
}

/// The answer's Markdown as HTML that is safe to embed in a page.
pub fn to_html(markdown: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let events = Parser::new_ext(markdown, options).map(|event| match event {
        Event::Html(html) | Event::InlineHtml(html) => Event::Text(html),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) if !safe_link(&dest_url) => Event::Start(Tag::Link {
            link_type,
            dest_url: CowStr::Borrowed("#"),
            title,
            id,
        }),
        Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) if !safe_link(&dest_url) => Event::Start(Tag::Image {
            link_type,
            dest_url: CowStr::Borrowed("#"),
            title,
            id,
        }),
        other => other,
    });
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events);
    html
}

#[cfg(test)]
mod tests {
    use super::to_html;

    #[test]
    fn markdown_renders_and_markup_does_not() {
        let cases = [
            (
                "- 选用抗病品种\n- **及时**喷药",
                "<li><strong>及时</strong>喷药</li>",
            ),
            (
                "<script>alert(1)</script>",
                "&lt;script&gt;alert(1)&lt;/script&gt;",
            ),
            ("点<b onclick=x>这里</b>", "&lt;b onclick=x&gt;"),
            ("[看](javascript:alert(1))", "<a href=\"#\">看</a>"),
            (
                "[来源](https://www.example.org/a)",
                "<a href=\"https://www.example.org/a\">来源</a>",
            ),
        ];
        for (markdown, expected) in cases {
            let html = to_html(markdown);
            assert!(html.contains(expected), "{markdown:?} → {html}");
            assert!(!html.contains("<script"), "{html}");
        }
    }
}
