//! Which media types are JSON: one rule for every body the service reads (its own events,
//! find bodies, and the data of a binary-mode CloudEvent).

use mime::Mime;

/// `application/json` or any `application/*+json`.
pub fn is_json(media: &Mime) -> bool {
    media.type_() == mime::APPLICATION
        && (media.subtype() == mime::JSON || media.suffix() == Some(mime::JSON))
}
