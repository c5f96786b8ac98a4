//! Page tokens. A token is opaque to clients: it carries the listing's
//! filters (so it cannot be replayed against another listing) and the sort
//! key of the last item returned.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::domain::crud::{self, Listed};
use crate::error::{Error, Result};
use crate::store::ReadView;
use crate::store::records::{Record, Source};

pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 1000;

#[derive(Debug)]
pub struct PageRequest {
    pub size: usize,
    after: Option<String>,
    filters: String,
}

impl PageRequest {
    /// `filters`: every filter value of the listing, in a fixed order.
    pub fn parse(page_size: i32, token: &str, filters: &[&str]) -> Result<Self> {
        let size = match page_size {
            n if n < 0 => return Err(Error::invalid("page_size", "must not be negative")),
            0 => DEFAULT_PAGE_SIZE,
            n => (n as usize).min(MAX_PAGE_SIZE),
        };
        let filters = filters.join("\u{1f}");
        let after = if token.is_empty() {
            None
        } else {
            let decoded = URL_SAFE_NO_PAD
                .decode(token)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .and_then(|text| {
                    text.split_once('\n')
                        .map(|(f, a)| (f.to_string(), a.to_string()))
                });
            match decoded {
                Some((token_filters, after)) if token_filters == filters && !after.is_empty() => {
                    Some(after)
                }
                Some(_) => {
                    return Err(Error::invalid(
                        "page_token",
                        "belongs to a listing with other filters",
                    ));
                }
                None => {
                    return Err(Error::invalid(
                        "page_token",
                        "is not a token this service issued",
                    ));
                }
            }
        };
        Ok(Self {
            size,
            after,
            filters,
        })
    }

    pub fn after(&self) -> Option<&str> {
        self.after.as_deref()
    }

    /// The token for the page after `listed`, or "" when it was the last.
    pub fn next_token<E>(&self, listed: &Listed<E>, sort_key: impl Fn(&E) -> String) -> String {
        match listed.items.last() {
            Some(last) if listed.more => self.token_after(&sort_key(last)),
            _ => String::new(),
        }
    }

    /// This page of the records `source` yields that `keep` accepts, in id
    /// order, with the token for the next page ("" after the last): the
    /// whole of a List of stored records once its filters are parsed.
    pub fn list<R: Record>(
        &self,
        view: &dyn ReadView,
        source: Source<'_>,
        keep: impl Fn(&R) -> bool,
    ) -> Result<(Vec<R>, String)> {
        let listed = crud::list(view, source, keep, self.size, self.after())?;
        let token = self.next_token(&listed, R::id);
        Ok((listed.items, token))
    }

    /// The token for the page that continues after sort key `key`.
    pub fn token_after(&self, key: &str) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}\n{key}", self.filters))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_their_filters() {
        let page = PageRequest::parse(2, "", &["g1"]).unwrap();
        let listed = Listed {
            items: vec!["a".to_string(), "b".to_string()],
            more: true,
        };
        let token = page.next_token(&listed, |s| s.clone());
        let next = PageRequest::parse(2, &token, &["g1"]).unwrap();
        assert_eq!(next.after(), Some("b"));
        assert!(PageRequest::parse(2, &token, &["g2"]).is_err());
        assert!(PageRequest::parse(2, "garbage!", &["g1"]).is_err());
        assert!(PageRequest::parse(-1, "", &[]).is_err());
        assert_eq!(
            PageRequest::parse(5000, "", &[]).unwrap().size,
            MAX_PAGE_SIZE
        );
    }
}
