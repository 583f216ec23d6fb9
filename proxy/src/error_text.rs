//! Errors as an operator reads them: the error and each cause, once, in words.
//!
//! Library errors here carry their cause in their own message (`could not connect to
//! upstream 127.0.0.1:5432: Connection refused`) and also expose it as `source()`;
//! tokio-postgres's errors do the opposite (`error connecting to server`, with the reason
//! only in `source()`). Printing either way alone loses the reason or says it twice.

use std::error::Error;

/// `error: cause: cause ...`, leaving out a cause whose text is already there.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let line = e.to_string();
        if !line.is_empty() && !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("could not connect to upstream 127.0.0.1:1: {0}")]
    struct Says(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("error connecting to server")]
    struct Hides(#[source] std::io::Error);

    #[test]
    fn each_cause_once() {
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            chain(&Says(refused())),
            "could not connect to upstream 127.0.0.1:1: refused"
        );
        assert_eq!(
            chain(&Hides(refused())),
            "error connecting to server: refused"
        );
    }
}
